// RUN: gshard-opt %s --pass-pipeline='builtin.module(gshard-pallas{block-tokens=8 block-vocab=16})' -o %t
// RUN: FileCheck %s --input-file %t
// RUN: FileCheck %s --input-file %t --check-prefix=GONE

// gshard-pallas in interpret mode (the default platform): the kernels run in
// Pallas's interpreter, plain StableHLO for any backend: a loop over the grid
// of token blocks around the kernel's loop over vocab blocks of [8, 16]
// logits. N = 21 and V = 37 leave clamped last blocks in both loops. No
// [N, V] = [21, 37] tensor and no custom call remain.
// Input: the primitive with label smoothing, lowered as a composite.

// GONE-NOT:    tensor<21x37xf32>
// GONE-NOT:    custom_call
// GONE-NOT:    stablehlo.composite
// GONE-NOT:    func.func private @gshard.shared_embedding_softmax(
// CHECK-LABEL: func.func public @forward_ids(
// CHECK-NEXT:    call @[[FWD:gshard\.pallas_forward_[0-9a-f]+]](%arg0, %arg1, %arg2) {gshard.plan = "gshard-pallas: platform=interpret block_tokens=8 block_vocab=16 block_features=16 block_grad_features=16"}
// CHECK:       func.func private @[[FWD]](
// CHECK:         stablehlo.while
// CHECK:           stablehlo.while
// CHECK:             stablehlo.dot_general {{.*}} -> tensor<8x16xf32>

func.func public @forward_ids(%arg0: tensor<21x16xf32>, %arg1: tensor<37x16xf32>, %arg2: tensor<21xi32>) -> (tensor<21xf32>, tensor<21xi32>, tensor<21xf32>, tensor<21xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<21x16xf32>, tensor<37x16xf32>, tensor<21xi32>) -> (tensor<21xf32>, tensor<21xi32>, tensor<21xf32>, tensor<21xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<21xf32>, tensor<21xi32>, tensor<21xf32>, tensor<21xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<21x16xf32>, %arg1: tensor<37x16xf32>, %arg2: tensor<21xi32>) -> (tensor<21xf32>, tensor<21xi32>, tensor<21xf32>, tensor<21xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<21x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<21x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<21x16xf32>, tensor<37x16xf32>) -> tensor<21x37xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<21x37xf32>, tensor<f32>) -> tensor<21xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<21xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<21xf32>
  %6 = stablehlo.is_finite %5 : (tensor<21xf32>) -> tensor<21xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<21xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<21xi1>, tensor<21xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<21xf32>) -> tensor<21x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<21x1xf32>) -> tensor<21x37xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<21x37xf32>
  %12 = stablehlo.exponential %11 : tensor<21x37xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<21x37xf32>, tensor<f32>) -> tensor<21xf32>
  %14 = stablehlo.sign %13 : tensor<21xf32>
  %15 = stablehlo.abs %13 : tensor<21xf32>
  %16 = stablehlo.log %15 : tensor<21xf32>
  %17 = stablehlo.add %16, %8 : tensor<21xf32>
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<21xf32>) -> tensor<21x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<21x1xf32>) -> tensor<21x37xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<21x37xf32>
  %21 = call @_one_hot(%arg2) : (tensor<21xi32>) -> tensor<21x37xf32>
  %cst_4 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %22 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<21x37xf32>
  %23 = stablehlo.multiply %22, %21 : tensor<21x37xf32>
  %cst_5 = stablehlo.constant dense<0.00270270277> : tensor<f32>
  %24 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<21x37xf32>
  %25 = stablehlo.add %23, %24 : tensor<21x37xf32>
  %26 = stablehlo.multiply %20, %25 : tensor<21x37xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %27 = stablehlo.reduce(%26 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<21x37xf32>, tensor<f32>) -> tensor<21xf32>
  %28 = stablehlo.negate %27 : tensor<21xf32>
  %29 = call @argmax(%2) : (tensor<21x37xf32>) -> tensor<21xi32>
  %30 = stablehlo.multiply %17, %17 : tensor<21xf32>
  return %28, %29, %17, %30 : tensor<21xf32>, tensor<21xi32>, tensor<21xf32>, tensor<21xf32>
}
func.func private @_one_hot(%arg0: tensor<21xi32>) -> tensor<21x37xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<21xi32>) -> tensor<21x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x37xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<21x1xi32>) -> tensor<21x37xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x37xi32>) -> tensor<21x37xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<21x37xi32>, tensor<21x37xi32>) -> tensor<21x37xi1>
  %5 = stablehlo.convert %4 : (tensor<21x37xi1>) -> tensor<21x37xf32>
  return %5 : tensor<21x37xf32>
}
func.func private @argmax(%arg0: tensor<21x37xf32>) -> tensor<21xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<21x37xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<21x37xf32>, tensor<21x37xi32>, tensor<f32>, tensor<i32>) -> (tensor<21xf32>, tensor<21xi32>)
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
  return %1#1 : tensor<21xi32>
}
