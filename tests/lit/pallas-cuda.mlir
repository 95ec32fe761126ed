// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-pallas{platform=cuda})' -o %t 2> %t.err
// RUN: FileCheck %s --input-file %t
// RUN: FileCheck %s --input-file %t.err --check-prefix=DECLINE

// gshard-pallas for a GPU, on this CPU: each composite becomes a call of a
// private function spliced from the kernels' `jax.export` for "cuda", whose
// Pallas calls are Triton custom calls. Blocks default to 64 tokens x 64
// classes, as powers of two no larger than N=32 and V=80: 32 x 64, so the last
// vocab block is clamped and masked; features in blocks of 64 (here all 16
// of them). The decompositions are erased.
// Inputs: real lowerings (gshard_op.lowering("composite")) of the primitive
// (bf16 operands) and of a value-and-grad with every option.

// CHECK-LABEL: func.func public @forward_ids(
// CHECK-NEXT:    %[[R:[^ ]+]]:4 = call @[[FWD:gshard\.pallas_forward_[0-9a-f]+]](%arg0, %arg1, %arg2) {gshard.plan = "gshard-pallas: platform=cuda block_tokens=32 block_vocab=64 block_features=16 block_grad_features=16"} : (tensor<32x16xbf16>, tensor<80x16xbf16>, tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>)
// CHECK-NEXT:    return %[[R]]#0, %[[R]]#1, %[[R]]#2, %[[R]]#3
// CHECK-NOT:   stablehlo.composite
// CHECK-NOT:   func.func private @gshard.shared_embedding_softmax
// CHECK:       func.func private @[[FWD]](%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>)
// One program per token block (grid_x = 1), the four results as [N, 1] columns.
// CHECK:         stablehlo.custom_call @__gpu$xla.gpu.triton(%arg0, %arg1, {{.*}}grid_x = 1 : i32{{.*}} -> (tensor<32x1xf32>, tensor<32x1xi32>, tensor<32x1xf32>, tensor<32x1xf32>)

func.func public @forward_ids(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<32x16xbf16>, tensor<80x16xbf16>, tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<bf16>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<bf16>) -> tensor<32x16xbf16>
  %1 = stablehlo.multiply %arg0, %0 : tensor<32x16xbf16>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<32x16xbf16>, tensor<80x16xbf16>) -> tensor<32x80xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<32xf32>
  %6 = stablehlo.is_finite %5 : (tensor<32xf32>) -> tensor<32xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<32xi1>, tensor<32xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<32x80xf32>
  %12 = stablehlo.exponential %11 : tensor<32x80xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %14 = stablehlo.sign %13 : tensor<32xf32>
  %15 = stablehlo.abs %13 : tensor<32xf32>
  %16 = stablehlo.log %15 : tensor<32xf32>
  %17 = stablehlo.add %16, %8 : tensor<32xf32>
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<32x80xf32>
  %21 = call @_one_hot(%arg2) : (tensor<32xi32>) -> tensor<32x80xf32>
  %22 = stablehlo.multiply %20, %21 : tensor<32x80xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %24 = stablehlo.negate %23 : tensor<32xf32>
  %25 = call @argmax(%2) : (tensor<32x80xf32>) -> tensor<32xi32>
  %26 = stablehlo.multiply %17, %17 : tensor<32xf32>
  return %24, %25, %17, %26 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
}
func.func private @_one_hot(%arg0: tensor<32xi32>) -> tensor<32x80xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<32xi32>) -> tensor<32x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x80xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<32x1xi32>) -> tensor<32x80xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x80xi32>) -> tensor<32x80xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<32x80xi32>, tensor<32x80xi32>) -> tensor<32x80xi1>
  %5 = stablehlo.convert %4 : (tensor<32x80xi1>) -> tensor<32x80xf32>
  return %5 : tensor<32x80xf32>
}
func.func private @argmax(%arg0: tensor<32x80xf32>) -> tensor<32xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<32x80xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<32x80xf32>, tensor<32x80xi32>, tensor<f32>, tensor<i32>) -> (tensor<32xf32>, tensor<32xi32>)
   reducer(%arg1: tensor<f32>, %arg3: tensor<f32>) (%arg2: tensor<i32>, %arg4: tensor<i32>)  {
    %2 = stablehlo.compare GT, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %3 = stablehlo.compare NE, %arg1, %arg1, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %4 = stablehlo.or %2, %3 : tensor<i1>
    %5 = stablehlo.compare EQ, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %6 = stablehlo.compare LT, %arg2, %arg4, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
    %7 = stablehlo.and %5, %6 : tensor<i1>
    %8 = stablehlo.or %4, %7 : tensor<i1>
    %9 = stablehlo.select %4, %arg1, %arg3 : tensor<i1>, tensor<f32>
    %10 = stablehlo.select %8, %arg2, %arg4 : tensor<i1>, tensor<i32>
    stablehlo.return %9, %10 : tensor<f32>, tensor<i32>
  }
  return %1#1 : tensor<32xi32>
}

// -----

// A training step: the forward and the gradient composite, each a kernel call.
// CHECK-LABEL: func.func public @value_and_grad_all_options(
// CHECK:         call @[[FWD2:gshard\.pallas_forward_[0-9a-f]+]](%arg0, %arg1, %{{[^)]+}}) {gshard.plan = "gshard-pallas: platform=cuda
// CHECK:         call @[[GRAD:gshard\.pallas_grad_[0-9a-f]+]](%arg0, %arg1, {{.*}}) {gshard.plan = "gshard-pallas: platform=cuda block_tokens=32 block_vocab=64 block_features=16 block_grad_features=16"} : {{.*}} -> (tensor<32x16xbf16>, tensor<80x16xbf16>)
// CHECK-NOT:   stablehlo.composite
// CHECK:       func.func private @[[FWD2]](
// CHECK:         stablehlo.custom_call @__gpu$xla.gpu.triton(
// The gradient: d_x over token blocks (grid_x = 1), d_embedding over vocab
// blocks (grid_x = ceil(80 / 64) = 2).
// CHECK:       func.func private @[[GRAD]](
// CHECK:         stablehlo.custom_call @__gpu$xla.gpu.triton({{.*}}grid_x = 1 : i32{{.*}} -> tensor<32x16xbf16>
// CHECK-NEXT:    stablehlo.custom_call @__gpu$xla.gpu.triton({{.*}}grid_x = 2 : i32{{.*}} -> tensor<80x16xbf16>


func.func public @value_and_grad_all_options(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32x1xf32>, %arg3: tensor<32x1xi32>) -> (tensor<f32>, tensor<32x16xbf16>, tensor<80x16xbf16>) {
  %0 = stablehlo.reshape %arg3 : (tensor<32x1xi32>) -> tensor<32xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<32x1xf32>) -> tensor<32xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 3.000000e+00 : f64, soft_cap_logits = 5.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<32x16xbf16>, tensor<80x16xbf16>, tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<32xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<32xf32>, tensor<f32>) -> tensor<f32>
  %5 = stablehlo.multiply %2#3, %1 : tensor<32xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.reduce(%5 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<32xf32>, tensor<f32>) -> tensor<f32>
  %cst_1 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %7 = stablehlo.multiply %cst_1, %6 : tensor<f32>
  %cst_2 = stablehlo.constant dense<3.200000e+01> : tensor<f32>
  %8 = stablehlo.divide %7, %cst_2 : tensor<f32>
  %cst_3 = stablehlo.constant dense<3.200000e+01> : tensor<f32>
  %9 = stablehlo.divide %4, %cst_3 : tensor<f32>
  %10 = stablehlo.convert %9 : (tensor<f32>) -> tensor<bf16>
  %11 = stablehlo.convert %10 : (tensor<bf16>) -> tensor<f32>
  %12 = stablehlo.add %11, %8 : tensor<f32>
  %cst_4 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_5 = stablehlo.constant dense<3.200000e+01> : tensor<f32>
  %13 = stablehlo.divide %cst_4, %cst_5 : tensor<f32>
  %cst_6 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_7 = stablehlo.constant dense<3.200000e+01> : tensor<f32>
  %14 = stablehlo.divide %cst_6, %cst_7 : tensor<f32>
  %cst_8 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %15 = stablehlo.multiply %cst_8, %14 : tensor<f32>
  %16 = stablehlo.broadcast_in_dim %15, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %17 = stablehlo.multiply %16, %1 : tensor<32xf32>
  %18 = stablehlo.broadcast_in_dim %13, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %19 = stablehlo.multiply %18, %1 : tensor<32xf32>
  %cst_9 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %20 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %21:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %19, %20, %17 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 3.000000e+00 : f64, soft_cap_logits = 5.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<32x16xbf16>, tensor<80x16xbf16>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>, tensor<32xf32>) -> (tensor<32x16xbf16>, tensor<80x16xbf16>)
  return %12, %21#0, %21#1 : tensor<f32>, tensor<32x16xbf16>, tensor<80x16xbf16>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<bf16>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<bf16>) -> tensor<32x16xbf16>
  %1 = stablehlo.multiply %arg0, %0 : tensor<32x16xbf16>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<32x16xbf16>, tensor<80x16xbf16>) -> tensor<32x80xf32>
  %cst_0 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %4 = stablehlo.divide %2, %3 : tensor<32x80xf32>
  %5 = stablehlo.tanh %4 : tensor<32x80xf32>
  %cst_1 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %7 = stablehlo.multiply %6, %5 : tensor<32x80xf32>
  %cst_2 = stablehlo.constant dense<-3.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %8 = call @clip(%7, %cst_2, %cst_3) : (tensor<32x80xf32>, tensor<f32>, tensor<f32>) -> tensor<32x80xf32>
  %cst_4 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %9 = stablehlo.reduce(%8 init: %cst_4) applies stablehlo.maximum across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %cst_5 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %11 = stablehlo.maximum %10, %9 : tensor<32xf32>
  %12 = stablehlo.is_finite %11 : (tensor<32xf32>) -> tensor<32xi1>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.broadcast_in_dim %cst_6, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %14 = stablehlo.select %12, %11, %13 : tensor<32xi1>, tensor<32xf32>
  %15 = stablehlo.broadcast_in_dim %14, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %16 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %17 = stablehlo.subtract %8, %16 : tensor<32x80xf32>
  %18 = stablehlo.exponential %17 : tensor<32x80xf32>
  %cst_7 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %19 = stablehlo.reduce(%18 init: %cst_7) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %20 = stablehlo.sign %19 : tensor<32xf32>
  %21 = stablehlo.abs %19 : tensor<32xf32>
  %22 = stablehlo.log %21 : tensor<32xf32>
  %23 = stablehlo.add %22, %14 : tensor<32xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %25 = stablehlo.broadcast_in_dim %24, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %26 = stablehlo.subtract %8, %25 : tensor<32x80xf32>
  %27 = call @_one_hot(%arg2) : (tensor<32xi32>) -> tensor<32x80xf32>
  %cst_8 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %28 = stablehlo.broadcast_in_dim %cst_8, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %29 = stablehlo.multiply %28, %27 : tensor<32x80xf32>
  %cst_9 = stablehlo.constant dense<1.250000e-03> : tensor<f32>
  %30 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %31 = stablehlo.add %29, %30 : tensor<32x80xf32>
  %32 = stablehlo.multiply %26, %31 : tensor<32x80xf32>
  %cst_10 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %33 = stablehlo.reduce(%32 init: %cst_10) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %34 = stablehlo.negate %33 : tensor<32xf32>
  %35 = call @argmax(%8) : (tensor<32x80xf32>) -> tensor<32xi32>
  %36 = stablehlo.multiply %23, %23 : tensor<32xf32>
  return %34, %35, %23, %36 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
}
func.func private @clip(%arg0: tensor<32x80xf32>, %arg1: tensor<f32>, %arg2: tensor<f32>) -> tensor<32x80xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %2 = stablehlo.maximum %1, %arg0 : tensor<32x80xf32>
  %3 = stablehlo.convert %arg2 : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %5 = stablehlo.minimum %4, %2 : tensor<32x80xf32>
  return %5 : tensor<32x80xf32>
}
func.func private @_one_hot(%arg0: tensor<32xi32>) -> tensor<32x80xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<32xi32>) -> tensor<32x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x80xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<32x1xi32>) -> tensor<32x80xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x80xi32>) -> tensor<32x80xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<32x80xi32>, tensor<32x80xi32>) -> tensor<32x80xi1>
  %5 = stablehlo.convert %4 : (tensor<32x80xi1>) -> tensor<32x80xf32>
  return %5 : tensor<32x80xf32>
}
func.func private @argmax(%arg0: tensor<32x80xf32>) -> tensor<32xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<32x80xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<32x80xf32>, tensor<32x80xi32>, tensor<f32>, tensor<i32>) -> (tensor<32xf32>, tensor<32xi32>)
   reducer(%arg1: tensor<f32>, %arg3: tensor<f32>) (%arg2: tensor<i32>, %arg4: tensor<i32>)  {
    %2 = stablehlo.compare GT, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %3 = stablehlo.compare NE, %arg1, %arg1, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %4 = stablehlo.or %2, %3 : tensor<i1>
    %5 = stablehlo.compare EQ, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %6 = stablehlo.compare LT, %arg2, %arg4, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
    %7 = stablehlo.and %5, %6 : tensor<i1>
    %8 = stablehlo.or %4, %7 : tensor<i1>
    %9 = stablehlo.select %4, %arg1, %arg3 : tensor<i1>, tensor<f32>
    %10 = stablehlo.select %8, %arg2, %arg4 : tensor<i1>, tensor<i32>
    stablehlo.return %9, %10 : tensor<f32>, tensor<i32>
  }
  return %1#1 : tensor<32xi32>
}
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>, %arg3: tensor<32xf32>, %arg4: tensor<32xf32>, %arg5: tensor<32xf32>, %arg6: tensor<32xf32>) -> (tensor<32x16xbf16>, tensor<80x16xbf16>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<bf16>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<bf16>) -> tensor<32x16xbf16>
  %1 = stablehlo.multiply %arg0, %0 : tensor<32x16xbf16>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<32x16xbf16>, tensor<80x16xbf16>) -> tensor<32x80xf32>
  %cst_0 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %4 = stablehlo.divide %2, %3 : tensor<32x80xf32>
  %5 = stablehlo.tanh %4 : tensor<32x80xf32>
  %cst_1 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %7 = stablehlo.multiply %6, %5 : tensor<32x80xf32>
  %cst_2 = stablehlo.constant dense<-3.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %8 = call @clip(%7, %cst_2, %cst_3) : (tensor<32x80xf32>, tensor<f32>, tensor<f32>) -> tensor<32x80xf32>
  %9 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %11 = stablehlo.subtract %8, %10 : tensor<32x80xf32>
  %12 = stablehlo.exponential %11 : tensor<32x80xf32>
  %13 = call @_one_hot(%arg2) : (tensor<32xi32>) -> tensor<32x80xf32>
  %cst_4 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %14 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %15 = stablehlo.multiply %14, %13 : tensor<32x80xf32>
  %cst_5 = stablehlo.constant dense<1.250000e-03> : tensor<f32>
  %16 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %17 = stablehlo.add %15, %16 : tensor<32x80xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %18 = stablehlo.reduce(%17 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %cst_7 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %20 = stablehlo.broadcast_in_dim %cst_7, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %21 = stablehlo.multiply %20, %arg3 : tensor<32xf32>
  %22 = stablehlo.multiply %21, %arg6 : tensor<32xf32>
  %23 = stablehlo.add %arg5, %22 : tensor<32xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %25 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %26 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %27 = stablehlo.multiply %12, %26 : tensor<32x80xf32>
  %28 = stablehlo.subtract %27, %17 : tensor<32x80xf32>
  %29 = stablehlo.broadcast_in_dim %25, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %30 = stablehlo.multiply %29, %28 : tensor<32x80xf32>
  %31 = stablehlo.broadcast_in_dim %24, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %32 = stablehlo.multiply %31, %12 : tensor<32x80xf32>
  %33 = stablehlo.add %30, %32 : tensor<32x80xf32>
  %34 = stablehlo.abs %8 : tensor<32x80xf32>
  %cst_8 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %35 = stablehlo.broadcast_in_dim %cst_8, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %36 = stablehlo.compare LT, %34, %35, FLOAT : (tensor<32x80xf32>, tensor<32x80xf32>) -> tensor<32x80xi1>
  %cst_9 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %37 = call @_where(%36, %33, %cst_9) : (tensor<32x80xi1>, tensor<32x80xf32>, tensor<f32>) -> tensor<32x80xf32>
  %cst_10 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %38 = stablehlo.broadcast_in_dim %cst_10, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %39 = stablehlo.divide %2, %38 : tensor<32x80xf32>
  %40 = stablehlo.tanh %39 : tensor<32x80xf32>
  %41 = stablehlo.multiply %40, %40 : tensor<32x80xf32>
  %cst_11 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %42 = stablehlo.broadcast_in_dim %cst_11, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %43 = stablehlo.subtract %42, %41 : tensor<32x80xf32>
  %44 = stablehlo.multiply %37, %43 : tensor<32x80xf32>
  %45 = stablehlo.convert %44 : (tensor<32x80xf32>) -> tensor<32x80xbf16>
  %46 = stablehlo.dot_general %45, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<32x80xbf16>, tensor<80x16xbf16>) -> tensor<32x16xf32>
  %cst_12 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %47 = stablehlo.broadcast_in_dim %cst_12, dims = [] : (tensor<f32>) -> tensor<32x16xf32>
  %48 = stablehlo.multiply %47, %46 : tensor<32x16xf32>
  %49 = stablehlo.convert %44 : (tensor<32x80xf32>) -> tensor<32x80xbf16>
  %cst_13 = stablehlo.constant dense<2.500000e-01> : tensor<bf16>
  %50 = stablehlo.broadcast_in_dim %cst_13, dims = [] : (tensor<bf16>) -> tensor<32x16xbf16>
  %51 = stablehlo.multiply %arg0, %50 : tensor<32x16xbf16>
  %52 = stablehlo.dot_general %49, %51, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<32x80xbf16>, tensor<32x16xbf16>) -> tensor<80x16xf32>
  %53 = stablehlo.convert %48 : (tensor<32x16xf32>) -> tensor<32x16xbf16>
  %54 = stablehlo.convert %52 : (tensor<80x16xf32>) -> tensor<80x16xbf16>
  return %53, %54 : tensor<32x16xbf16>, tensor<80x16xbf16>
}
func.func private @_where(%arg0: tensor<32x80xi1>, %arg1: tensor<32x80xf32>, %arg2: tensor<f32>) -> tensor<32x80xf32> {
  %0 = stablehlo.convert %arg2 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<32x80xf32>
  %2 = stablehlo.select %arg0, %arg1, %1 : tensor<32x80xi1>, tensor<32x80xf32>
  return %2 : tensor<32x80xf32>
}

// -----

// M = 24 is not a power of two: the features are read in blocks of 16, the
// last one clamped to start at 8 and masked; Triton's arrays stay powers of
// two, so the kernels take it.
// CHECK-LABEL: func.func public @odd_features(
// CHECK-NEXT:    call @[[FWD3:gshard\.pallas_forward_[0-9a-f]+]](%arg0, %arg1, %arg2) {gshard.plan = "gshard-pallas: platform=cuda block_tokens=32 block_vocab=64 block_features=16 block_grad_features=16"}
// CHECK-NOT:     stablehlo.composite
// CHECK:       func.func private @[[FWD3]](%arg0: tensor<32x24xf32>, %arg1: tensor<80x24xf32>, %arg2: tensor<32xi32>)
// CHECK:         stablehlo.custom_call @__gpu$xla.gpu.triton(%arg0, %arg1, {{.*}}grid_x = 1 : i32


func.func public @odd_features(%arg0: tensor<32x24xf32>, %arg1: tensor<80x24xf32>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 0.20412414523193151 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<32x24xf32>, tensor<80x24xf32>, tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<32x24xf32>, %arg1: tensor<80x24xf32>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
  %cst = stablehlo.constant dense<0.204124153> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<32x24xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<32x24xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<32x24xf32>, tensor<80x24xf32>) -> tensor<32x80xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<32xf32>
  %6 = stablehlo.is_finite %5 : (tensor<32xf32>) -> tensor<32xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<32xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<32xi1>, tensor<32xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<32x80xf32>
  %12 = stablehlo.exponential %11 : tensor<32x80xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %14 = stablehlo.sign %13 : tensor<32xf32>
  %15 = stablehlo.abs %13 : tensor<32xf32>
  %16 = stablehlo.log %15 : tensor<32xf32>
  %17 = stablehlo.add %16, %8 : tensor<32xf32>
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<32x80xf32>
  %21 = call @_one_hot(%arg2) : (tensor<32xi32>) -> tensor<32x80xf32>
  %22 = stablehlo.multiply %20, %21 : tensor<32x80xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
  %24 = stablehlo.negate %23 : tensor<32xf32>
  %25 = call @argmax(%2) : (tensor<32x80xf32>) -> tensor<32xi32>
  %26 = stablehlo.multiply %17, %17 : tensor<32xf32>
  return %24, %25, %17, %26 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
}
func.func private @_one_hot(%arg0: tensor<32xi32>) -> tensor<32x80xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<32xi32>) -> tensor<32x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x80xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<32x1xi32>) -> tensor<32x80xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x80xi32>) -> tensor<32x80xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<32x80xi32>, tensor<32x80xi32>) -> tensor<32x80xi1>
  %5 = stablehlo.convert %4 : (tensor<32x80xi1>) -> tensor<32x80xf32>
  return %5 : tensor<32x80xf32>
}
func.func private @argmax(%arg0: tensor<32x80xf32>) -> tensor<32xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<32x80xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<32x80xf32>, tensor<32x80xi32>, tensor<f32>, tensor<i32>) -> (tensor<32xf32>, tensor<32xi32>)
   reducer(%arg1: tensor<f32>, %arg3: tensor<f32>) (%arg2: tensor<i32>, %arg4: tensor<i32>)  {
    %2 = stablehlo.compare GT, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %3 = stablehlo.compare NE, %arg1, %arg1, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %4 = stablehlo.or %2, %3 : tensor<i1>
    %5 = stablehlo.compare EQ, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %6 = stablehlo.compare LT, %arg2, %arg4, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
    %7 = stablehlo.and %5, %6 : tensor<i1>
    %8 = stablehlo.or %4, %7 : tensor<i1>
    %9 = stablehlo.select %4, %arg1, %arg3 : tensor<i1>, tensor<f32>
    %10 = stablehlo.select %8, %arg2, %arg4 : tensor<i1>, tensor<i32>
    stablehlo.return %9, %10 : tensor<f32>, tensor<i32>
  }
  return %1#1 : tensor<32xi32>
}

// -----

// N = 8 tokens: below Triton's smallest dot (16), so the kernels decline; the
// composite is left as it is, for the passes after this one, and the decline
// says why on stderr.
// Input: `python tools/make_lit_inputs.py --trim forward_ids`, renamed.
// CHECK-LABEL: func.func public @small_batch(
// CHECK-NEXT:    stablehlo.composite "gshard.shared_embedding_softmax"
// CHECK-NOT:     gshard.pallas
// DECLINE: gshard-pallas: gshard.shared_embedding_softmax at {{.*}} not rewritten (N=8 or V=50 below the Triton minimum block of 16); left to later passes

func.func public @small_batch(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<8xf32>
  %6 = stablehlo.is_finite %5 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<8xi1>, tensor<8xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<8x50xf32>
  %12 = stablehlo.exponential %11 : tensor<8x50xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.sign %13 : tensor<8xf32>
  %15 = stablehlo.abs %13 : tensor<8xf32>
  %16 = stablehlo.log %15 : tensor<8xf32>
  %17 = stablehlo.add %16, %8 : tensor<8xf32>
  %18 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %19 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %20 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.subtract %2, %20 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %22 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %23 = stablehlo.compare EQ, %18, %22, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %24 = stablehlo.multiply %21, %18 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %25 = call @_where(%23, %cst_5, %24) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %26 = stablehlo.reduce(%25 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %27 = stablehlo.negate %26 : tensor<8xf32>
  %28 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %29 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %27, %28, %17, %29 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @_one_hot(%arg0: tensor<8xi32>) -> tensor<8x50xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<8xi32>) -> tensor<8x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x50xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<8x1xi32>) -> tensor<8x50xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x50xi32>) -> tensor<8x50xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<8x50xi32>, tensor<8x50xi32>) -> tensor<8x50xi1>
  %5 = stablehlo.convert %4 : (tensor<8x50xi1>) -> tensor<8x50xf32>
  return %5 : tensor<8x50xf32>
}
func.func private @_where(%arg0: tensor<8x50xi1>, %arg1: tensor<f32>, %arg2: tensor<8x50xf32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.select %arg0, %1, %arg2 : tensor<8x50xi1>, tensor<8x50xf32>
  return %2 : tensor<8x50xf32>
}
func.func private @argmax(%arg0: tensor<8x50xf32>) -> tensor<8xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<8x50xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<8x50xf32>, tensor<8x50xi32>, tensor<f32>, tensor<i32>) -> (tensor<8xf32>, tensor<8xi32>)
   reducer(%arg1: tensor<f32>, %arg3: tensor<f32>) (%arg2: tensor<i32>, %arg4: tensor<i32>)  {
    %2 = stablehlo.compare GT, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %3 = stablehlo.compare NE, %arg1, %arg1, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %4 = stablehlo.or %2, %3 : tensor<i1>
    %5 = stablehlo.compare EQ, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
    %6 = stablehlo.compare LT, %arg2, %arg4, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
    %7 = stablehlo.and %5, %6 : tensor<i1>
    %8 = stablehlo.or %4, %7 : tensor<i1>
    %9 = stablehlo.select %4, %arg1, %arg3 : tensor<i1>, tensor<f32>
    %10 = stablehlo.select %8, %arg2, %arg4 : tensor<i1>, tensor<i32>
    stablehlo.return %9, %10 : tensor<f32>, tensor<i32>
  }
  return %1#1 : tensor<8xi32>
}

// -----

// A module XLA will partition (num_partitions > 1): the kernel's custom call
// would be opaque to the SPMD partitioner, so the composite is left as it is.
// DECLINE: gshard-pallas: gshard.shared_embedding_softmax at {{.*}} not rewritten (the module is partitioned over 2 devices)
// CHECK-LABEL: func.func public @partitioned(
// CHECK-NEXT:    stablehlo.composite "gshard.shared_embedding_softmax"
// CHECK-NOT:     gshard.pallas

module attributes {mhlo.num_partitions = 2 : i32} {
  func.func public @partitioned(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
    %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<32x16xbf16>, tensor<80x16xbf16>, tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>)
    return %0#0, %0#1, %0#2, %0#3 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
  }
  func.func private @gshard.shared_embedding_softmax(%arg0: tensor<32x16xbf16>, %arg1: tensor<80x16xbf16>, %arg2: tensor<32xi32>) -> (tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>) {
    %cst = stablehlo.constant dense<2.500000e-01> : tensor<bf16>
    %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<bf16>) -> tensor<32x16xbf16>
    %1 = stablehlo.multiply %arg0, %0 : tensor<32x16xbf16>
    %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<32x16xbf16>, tensor<80x16xbf16>) -> tensor<32x80xf32>
    %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
    %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<32xf32>
    %5 = stablehlo.maximum %4, %3 : tensor<32xf32>
    %6 = stablehlo.is_finite %5 : (tensor<32xf32>) -> tensor<32xi1>
    %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<32xf32>
    %8 = stablehlo.select %6, %5, %7 : tensor<32xi1>, tensor<32xf32>
    %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
    %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
    %11 = stablehlo.subtract %2, %10 : tensor<32x80xf32>
    %12 = stablehlo.exponential %11 : tensor<32x80xf32>
    %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
    %14 = stablehlo.sign %13 : tensor<32xf32>
    %15 = stablehlo.abs %13 : tensor<32xf32>
    %16 = stablehlo.log %15 : tensor<32xf32>
    %17 = stablehlo.add %16, %8 : tensor<32xf32>
    %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<32xf32>) -> tensor<32x1xf32>
    %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<32x1xf32>) -> tensor<32x80xf32>
    %20 = stablehlo.subtract %2, %19 : tensor<32x80xf32>
    %21 = call @_one_hot(%arg2) : (tensor<32xi32>) -> tensor<32x80xf32>
    %22 = stablehlo.multiply %20, %21 : tensor<32x80xf32>
    %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<32x80xf32>, tensor<f32>) -> tensor<32xf32>
    %24 = stablehlo.negate %23 : tensor<32xf32>
    %25 = call @argmax(%2) : (tensor<32x80xf32>) -> tensor<32xi32>
    %26 = stablehlo.multiply %17, %17 : tensor<32xf32>
    return %24, %25, %17, %26 : tensor<32xf32>, tensor<32xi32>, tensor<32xf32>, tensor<32xf32>
  }
  func.func private @_one_hot(%arg0: tensor<32xi32>) -> tensor<32x80xf32> {
    %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<32xi32>) -> tensor<32x1xi32>
    %1 = stablehlo.iota dim = 1 : tensor<1x80xi32>
    %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<32x1xi32>) -> tensor<32x80xi32>
    %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x80xi32>) -> tensor<32x80xi32>
    %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<32x80xi32>, tensor<32x80xi32>) -> tensor<32x80xi1>
    %5 = stablehlo.convert %4 : (tensor<32x80xi1>) -> tensor<32x80xf32>
    return %5 : tensor<32x80xf32>
  }
  func.func private @argmax(%arg0: tensor<32x80xf32>) -> tensor<32xi32> {
    %0 = stablehlo.iota dim = 1 : tensor<32x80xi32>
    %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %c = stablehlo.constant dense<0> : tensor<i32>
    %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<32x80xf32>, tensor<32x80xi32>, tensor<f32>, tensor<i32>) -> (tensor<32xf32>, tensor<32xi32>)
     reducer(%arg1: tensor<f32>, %arg3: tensor<f32>) (%arg2: tensor<i32>, %arg4: tensor<i32>)  {
      %2 = stablehlo.compare GT, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %3 = stablehlo.compare NE, %arg1, %arg1, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %4 = stablehlo.or %2, %3 : tensor<i1>
      %5 = stablehlo.compare EQ, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %6 = stablehlo.compare LT, %arg2, %arg4, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %7 = stablehlo.and %5, %6 : tensor<i1>
      %8 = stablehlo.or %4, %7 : tensor<i1>
      %9 = stablehlo.select %4, %arg1, %arg3 : tensor<i1>, tensor<f32>
      %10 = stablehlo.select %8, %arg2, %arg4 : tensor<i1>, tensor<i32>
      stablehlo.return %9, %10 : tensor<f32>, tensor<i32>
    }
    return %1#1 : tensor<32xi32>
  }
}
