// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-pallas{platform=tpu block-tokens=8 block-vocab=128})' -o %t
// RUN: FileCheck %s --input-file %t

// gshard-pallas for a TPU, on this CPU: the same kernel bodies lowered by
// Mosaic, one `tpu_custom_call` per Pallas call. Blocks of 8 tokens x 128
// classes (Mosaic's (8, 128) tiles); V = 200 leaves a clamped, masked last
// vocab block. Inputs: real lowerings of the primitive (soft cap) and of a
// value-and-grad with z-loss.

// CHECK-LABEL: func.func public @forward_ids(
// CHECK-NEXT:    call @[[FWD:gshard\.pallas_forward_[0-9a-f]+]](%arg0, %arg1, %arg2) {gshard.plan = "gshard-pallas: platform=tpu block_tokens=8 block_vocab=128 block_features=128 block_grad_features=128"}
// CHECK-NOT:   stablehlo.composite
// CHECK:       func.func private @[[FWD]](%arg0: tensor<16x128xf32>, %arg1: tensor<200x128xf32>, %arg2: tensor<16xi32>)
// CHECK:         stablehlo.custom_call @tpu_custom_call(%arg0, %arg1, {{.*}} -> (tensor<16x1xf32>, tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x1xf32>)

func.func public @forward_ids(%arg0: tensor<16x128xf32>, %arg1: tensor<200x128xf32>, %arg2: tensor<16xi32>) -> (tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 0.088388347648318447 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 5.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<16x128xf32>, tensor<200x128xf32>, tensor<16xi32>) -> (tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<16x128xf32>, %arg1: tensor<200x128xf32>, %arg2: tensor<16xi32>) -> (tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>) {
  %cst = stablehlo.constant dense<0.0883883461> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<16x128xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<16x128xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<16x128xf32>, tensor<200x128xf32>) -> tensor<16x200xf32>
  %cst_0 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<16x200xf32>
  %4 = stablehlo.divide %2, %3 : tensor<16x200xf32>
  %5 = stablehlo.tanh %4 : tensor<16x200xf32>
  %cst_1 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<16x200xf32>
  %7 = stablehlo.multiply %6, %5 : tensor<16x200xf32>
  %cst_2 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %8 = stablehlo.reduce(%7 init: %cst_2) applies stablehlo.maximum across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %cst_3 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %9 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %10 = stablehlo.maximum %9, %8 : tensor<16xf32>
  %11 = stablehlo.is_finite %10 : (tensor<16xf32>) -> tensor<16xi1>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %12 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %13 = stablehlo.select %11, %10, %12 : tensor<16xi1>, tensor<16xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %15 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %16 = stablehlo.subtract %7, %15 : tensor<16x200xf32>
  %17 = stablehlo.exponential %16 : tensor<16x200xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %18 = stablehlo.reduce(%17 init: %cst_5) applies stablehlo.add across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %19 = stablehlo.sign %18 : tensor<16xf32>
  %20 = stablehlo.abs %18 : tensor<16xf32>
  %21 = stablehlo.log %20 : tensor<16xf32>
  %22 = stablehlo.add %21, %13 : tensor<16xf32>
  %23 = stablehlo.broadcast_in_dim %22, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %25 = stablehlo.subtract %7, %24 : tensor<16x200xf32>
  %26 = call @_one_hot(%arg2) : (tensor<16xi32>) -> tensor<16x200xf32>
  %27 = stablehlo.multiply %25, %26 : tensor<16x200xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %28 = stablehlo.reduce(%27 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %29 = stablehlo.negate %28 : tensor<16xf32>
  %30 = call @argmax(%7) : (tensor<16x200xf32>) -> tensor<16xi32>
  %31 = stablehlo.multiply %22, %22 : tensor<16xf32>
  return %29, %30, %22, %31 : tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>
}
func.func private @_one_hot(%arg0: tensor<16xi32>) -> tensor<16x200xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<16xi32>) -> tensor<16x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x200xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<16x1xi32>) -> tensor<16x200xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x200xi32>) -> tensor<16x200xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<16x200xi32>, tensor<16x200xi32>) -> tensor<16x200xi1>
  %5 = stablehlo.convert %4 : (tensor<16x200xi1>) -> tensor<16x200xf32>
  return %5 : tensor<16x200xf32>
}
func.func private @argmax(%arg0: tensor<16x200xf32>) -> tensor<16xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<16x200xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<16x200xf32>, tensor<16x200xi32>, tensor<f32>, tensor<i32>) -> (tensor<16xf32>, tensor<16xi32>)
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
  return %1#1 : tensor<16xi32>
}

// -----

// CHECK-LABEL: func.func public @value_and_grad_ids(
// CHECK:         call @[[FWD2:gshard\.pallas_forward_[0-9a-f]+]](
// CHECK:         call @[[GRAD:gshard\.pallas_grad_[0-9a-f]+]](
// CHECK-NOT:   stablehlo.composite
// CHECK:       func.func private @[[FWD2]](
// CHECK:         stablehlo.custom_call @tpu_custom_call(
// CHECK:       func.func private @[[GRAD]](
// CHECK:         stablehlo.custom_call @tpu_custom_call({{.*}} -> tensor<16x128xf32>
// CHECK-NEXT:    stablehlo.custom_call @tpu_custom_call({{.*}} -> tensor<200x128xf32>


func.func public @value_and_grad_ids(%arg0: tensor<16x128xf32>, %arg1: tensor<200x128xf32>, %arg2: tensor<16x1xf32>, %arg3: tensor<16x1xi32>) -> (tensor<f32>, tensor<16x128xf32>, tensor<200x128xf32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<16x1xi32>) -> tensor<16xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<16x1xf32>) -> tensor<16xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 0.088388347648318447 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<16x128xf32>, tensor<200x128xf32>, tensor<16xi32>) -> (tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<16xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<16xf32>, tensor<f32>) -> tensor<f32>
  %5 = stablehlo.multiply %2#3, %1 : tensor<16xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.reduce(%5 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<16xf32>, tensor<f32>) -> tensor<f32>
  %cst_1 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %7 = stablehlo.multiply %cst_1, %6 : tensor<f32>
  %cst_2 = stablehlo.constant dense<1.600000e+01> : tensor<f32>
  %8 = stablehlo.divide %7, %cst_2 : tensor<f32>
  %cst_3 = stablehlo.constant dense<1.600000e+01> : tensor<f32>
  %9 = stablehlo.divide %4, %cst_3 : tensor<f32>
  %10 = stablehlo.add %9, %8 : tensor<f32>
  %cst_4 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_5 = stablehlo.constant dense<1.600000e+01> : tensor<f32>
  %11 = stablehlo.divide %cst_4, %cst_5 : tensor<f32>
  %cst_6 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_7 = stablehlo.constant dense<1.600000e+01> : tensor<f32>
  %12 = stablehlo.divide %cst_6, %cst_7 : tensor<f32>
  %cst_8 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %13 = stablehlo.multiply %cst_8, %12 : tensor<f32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %15 = stablehlo.multiply %14, %1 : tensor<16xf32>
  %16 = stablehlo.broadcast_in_dim %11, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %17 = stablehlo.multiply %16, %1 : tensor<16xf32>
  %cst_9 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %18 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %19:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %17, %18, %15 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 0.088388347648318447 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<16x128xf32>, tensor<200x128xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<16x128xf32>, tensor<200x128xf32>)
  return %10, %19#0, %19#1 : tensor<f32>, tensor<16x128xf32>, tensor<200x128xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<16x128xf32>, %arg1: tensor<200x128xf32>, %arg2: tensor<16xi32>) -> (tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>) {
  %cst = stablehlo.constant dense<0.0883883461> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<16x128xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<16x128xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<16x128xf32>, tensor<200x128xf32>) -> tensor<16x200xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<16xf32>
  %6 = stablehlo.is_finite %5 : (tensor<16xf32>) -> tensor<16xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<16xi1>, tensor<16xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<16x200xf32>
  %12 = stablehlo.exponential %11 : tensor<16x200xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %14 = stablehlo.sign %13 : tensor<16xf32>
  %15 = stablehlo.abs %13 : tensor<16xf32>
  %16 = stablehlo.log %15 : tensor<16xf32>
  %17 = stablehlo.add %16, %8 : tensor<16xf32>
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<16x200xf32>
  %21 = call @_one_hot(%arg2) : (tensor<16xi32>) -> tensor<16x200xf32>
  %22 = stablehlo.multiply %20, %21 : tensor<16x200xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %24 = stablehlo.negate %23 : tensor<16xf32>
  %25 = call @argmax(%2) : (tensor<16x200xf32>) -> tensor<16xi32>
  %26 = stablehlo.multiply %17, %17 : tensor<16xf32>
  return %24, %25, %17, %26 : tensor<16xf32>, tensor<16xi32>, tensor<16xf32>, tensor<16xf32>
}
func.func private @_one_hot(%arg0: tensor<16xi32>) -> tensor<16x200xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<16xi32>) -> tensor<16x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x200xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<16x1xi32>) -> tensor<16x200xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x200xi32>) -> tensor<16x200xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<16x200xi32>, tensor<16x200xi32>) -> tensor<16x200xi1>
  %5 = stablehlo.convert %4 : (tensor<16x200xi1>) -> tensor<16x200xf32>
  return %5 : tensor<16x200xf32>
}
func.func private @argmax(%arg0: tensor<16x200xf32>) -> tensor<16xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<16x200xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<16x200xf32>, tensor<16x200xi32>, tensor<f32>, tensor<i32>) -> (tensor<16xf32>, tensor<16xi32>)
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
  return %1#1 : tensor<16xi32>
}
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<16x128xf32>, %arg1: tensor<200x128xf32>, %arg2: tensor<16xi32>, %arg3: tensor<16xf32>, %arg4: tensor<16xf32>, %arg5: tensor<16xf32>, %arg6: tensor<16xf32>) -> (tensor<16x128xf32>, tensor<200x128xf32>) {
  %cst = stablehlo.constant dense<0.0883883461> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<16x128xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<16x128xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<16x128xf32>, tensor<200x128xf32>) -> tensor<16x200xf32>
  %3 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %5 = stablehlo.subtract %2, %4 : tensor<16x200xf32>
  %6 = stablehlo.exponential %5 : tensor<16x200xf32>
  %7 = call @_one_hot(%arg2) : (tensor<16xi32>) -> tensor<16x200xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %8 = stablehlo.reduce(%7 init: %cst_0) applies stablehlo.add across dimensions = [1] : (tensor<16x200xf32>, tensor<f32>) -> tensor<16xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<16xf32>
  %11 = stablehlo.multiply %10, %arg3 : tensor<16xf32>
  %12 = stablehlo.multiply %11, %arg6 : tensor<16xf32>
  %13 = stablehlo.add %arg5, %12 : tensor<16xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %15 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<16xf32>) -> tensor<16x1xf32>
  %16 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %17 = stablehlo.multiply %6, %16 : tensor<16x200xf32>
  %18 = stablehlo.subtract %17, %7 : tensor<16x200xf32>
  %19 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %20 = stablehlo.multiply %19, %18 : tensor<16x200xf32>
  %21 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<16x1xf32>) -> tensor<16x200xf32>
  %22 = stablehlo.multiply %21, %6 : tensor<16x200xf32>
  %23 = stablehlo.add %20, %22 : tensor<16x200xf32>
  %24 = stablehlo.dot_general %23, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<16x200xf32>, tensor<200x128xf32>) -> tensor<16x128xf32>
  %cst_2 = stablehlo.constant dense<0.0883883461> : tensor<f32>
  %25 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<16x128xf32>
  %26 = stablehlo.multiply %25, %24 : tensor<16x128xf32>
  %cst_3 = stablehlo.constant dense<0.0883883461> : tensor<f32>
  %27 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<16x128xf32>
  %28 = stablehlo.multiply %arg0, %27 : tensor<16x128xf32>
  %29 = stablehlo.dot_general %23, %28, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<16x200xf32>, tensor<16x128xf32>) -> tensor<200x128xf32>
  return %26, %29 : tensor<16x128xf32>, tensor<200x128xf32>
}
