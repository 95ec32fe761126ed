// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=16})' -o %t
// RUN: FileCheck %s --input-file %t
// RUN: FileCheck %s --input-file %t --check-prefix=GONE

// Soft labels: the class probabilities are an [N, V] = [8, 50] input, read one
// [8, 16] chunk at a time next to the logits chunk, in the forward loop and in
// the gradient loop. No operation computes an [8, 50] tensor (the loops carry
// the input through unchanged, as JAX's fori_loop carries loop invariants);
// the decomposition is erased.
// Inputs: `python tools/make_lit_inputs.py --trim forward_probs value_and_grad_probs`.

// GONE-NOT: stablehlo.composite
// GONE-NOT: -> tensor<8x50xf32>
// GONE-NOT: : tensor<8x50xf32>{{$}}
// GONE-NOT: func.func private

// CHECK-LABEL: func.func public @forward_probs(
// CHECK-SAME:      %[[X:[^:]+]]: tensor<8x16xf32>, %[[E:[^:]+]]: tensor<50x16xf32>, %{{[^:]+}}: tensor<8x1xf32>, %[[P:[^:]+]]: tensor<8x50xf32>)
// The loop carries the embedding, the probabilities and x as JAX's fori_loop
// carries loop invariants: the [8, 50] input passes through the loop unchanged
// (the body returns its argument), only [8, 16] slices of it are read.
// CHECK:         stablehlo.while(%[[EA:[^ ]+]] = %[[E]], %[[PA:[^ ]+]] = %[[P]], %[[XA:[^ ]+]] = %[[X]],
// CHECK:         } do {
// CHECK:           stablehlo.dynamic_slice %[[EA]], {{.*}} -> tensor<16x16xf32>
// CHECK-DAG:       stablehlo.dot_general %[[XA]], {{.*}} : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32>
// CHECK-DAG:       stablehlo.dynamic_slice %[[PA]], {{.*}} sizes = [8, 16] : (tensor<8x50xf32>, tensor<i32>, tensor<i32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.return %[[EA]], %[[PA]], %[[XA]],
// CHECK:         return {{.*}} : tensor<f32>, tensor<8xi32>

func.func public @forward_probs(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x50xf32>) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %1:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg3 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8x50xf32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %2 = stablehlo.multiply %1#0, %0 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_0 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %4 = stablehlo.divide %3, %cst_0 : tensor<f32>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %5 = stablehlo.add %4, %cst_1 : tensor<f32>
  return %5, %1#1 : tensor<f32>, tensor<8xi32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x50xf32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
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
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<8x50xf32>
  %21 = stablehlo.multiply %20, %arg2 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %22 = stablehlo.reduce(%21 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %23 = stablehlo.negate %22 : tensor<8xf32>
  %24 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %25 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %23, %24, %17, %25 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
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

// CHECK-LABEL: func.func public @value_and_grad_probs(
// CHECK-SAME:      %[[P:[^:]+]]: tensor<8x50xf32>)
// CHECK:         stablehlo.while({{.*}}%[[PA:[^ ]+]] = %[[P]],
// CHECK:           stablehlo.dynamic_slice %[[PA]], {{.*}} sizes = [8, 16] : (tensor<8x50xf32>, tensor<i32>, tensor<i32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.return {{.*}}, %[[PA]],
// CHECK:         stablehlo.while({{.*}}%[[GPA:[^ ]+]] = %[[P]],{{.*}}) : {{.*}}tensor<i32>, tensor<8x16xf32>, tensor<50x16xf32> attributes
// CHECK:           stablehlo.dynamic_slice %[[GPA]], {{.*}} sizes = [8, 16] : (tensor<8x50xf32>, tensor<i32>, tensor<i32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.dot_general {{.*}} : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<16x16xf32>
// CHECK:           stablehlo.return {{.*}}, %[[GPA]],
// CHECK:         return {{.*}} : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>

func.func public @value_and_grad_probs(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x50xf32>) -> (tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>) {
  %0 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %1:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg3 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8x50xf32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %2 = stablehlo.multiply %1#0, %0 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_0 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %4 = stablehlo.divide %3, %cst_0 : tensor<f32>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %5 = stablehlo.add %4, %cst_1 : tensor<f32>
  %cst_2 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %6 = stablehlo.divide %cst_2, %cst_3 : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %6, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %8 = stablehlo.multiply %7, %0 : tensor<8xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %9 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %11:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %arg3, %1#2, %8, %9, %10 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8x50xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
  return %5, %11#0, %11#1 : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x50xf32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
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
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<8x50xf32>
  %21 = stablehlo.multiply %20, %arg2 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %22 = stablehlo.reduce(%21 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %23 = stablehlo.negate %22 : tensor<8xf32>
  %24 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %25 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %23, %24, %17, %25 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
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
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x50xf32>, %arg3: tensor<8xf32>, %arg4: tensor<8xf32>, %arg5: tensor<8xf32>, %arg6: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %3 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %5 = stablehlo.subtract %2, %4 : tensor<8x50xf32>
  %6 = stablehlo.exponential %5 : tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.reduce(%arg2 init: %cst_0) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %8 = stablehlo.broadcast_in_dim %7, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %9 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %10 = stablehlo.multiply %9, %arg3 : tensor<8xf32>
  %11 = stablehlo.multiply %10, %arg6 : tensor<8xf32>
  %12 = stablehlo.add %arg5, %11 : tensor<8xf32>
  %13 = stablehlo.broadcast_in_dim %12, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %14 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.broadcast_in_dim %8, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %16 = stablehlo.multiply %6, %15 : tensor<8x50xf32>
  %17 = stablehlo.subtract %16, %arg2 : tensor<8x50xf32>
  %18 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %19 = stablehlo.multiply %18, %17 : tensor<8x50xf32>
  %20 = stablehlo.broadcast_in_dim %13, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.multiply %20, %6 : tensor<8x50xf32>
  %22 = stablehlo.add %19, %21 : tensor<8x50xf32>
  %23 = stablehlo.dot_general %22, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<50x16xf32>) -> tensor<8x16xf32>
  %cst_2 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %24 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %25 = stablehlo.multiply %24, %23 : tensor<8x16xf32>
  %cst_3 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %26 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %27 = stablehlo.multiply %arg0, %26 : tensor<8x16xf32>
  %28 = stablehlo.dot_general %22, %27, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<8x16xf32>) -> tensor<50x16xf32>
  return %25, %28 : tensor<8x16xf32>, tensor<50x16xf32>
}
