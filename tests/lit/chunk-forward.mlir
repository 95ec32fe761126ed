// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=16})' -o %t
// RUN: FileCheck %s --input-file %t
// RUN: FileCheck %s --input-file %t --check-prefix=GONE

// gshard-chunk-softmax on the forward composite with class ids: one
// stablehlo.while over vocab chunks of 16 classes (online max / sum-exp /
// argmax / target logit), logits [8, 16] per chunk. No [N, V] = [8, 50] tensor
// is left anywhere and the decomposition (with its helpers) is erased.
// Inputs: `python tools/make_lit_inputs.py --trim forward_ids forward_ids_argmax`.

// GONE-NOT: stablehlo.composite
// GONE-NOT: tensor<8x50xf32>
// GONE-NOT: func.func private

// The primitive alone, all four per-token results used.
// CHECK-LABEL: func.func public @forward_ids(
// CHECK-SAME:      %[[X:[^:]+]]: tensor<8x16xf32>, %[[E:[^:]+]]: tensor<50x16xf32>, %[[IDS:[^:]+]]: tensor<8xi32>)
// The loop carries the embedding and x as loop invariants (JAX's fori_loop),
// returned unchanged by the body.
// CHECK:         %[[LOOP:[^:]+]]:{{[0-9]+}} = stablehlo.while({{.*}}%[[EA:[^ ]+]] = %[[E]], %[[XA:[^ ]+]] = %[[X]],
// CHECK-SAME:      attributes {gshard.plan = "gshard-chunk-softmax: token_chunk=8 vocab_chunk=16"}
// CHECK:         cond {
// CHECK:         } do {
// CHECK:           %[[EC:[^ ]+]] = stablehlo.dynamic_slice %[[EA]], {{.*}} : (tensor<50x16xf32>, tensor<i32>, tensor<i32>) -> tensor<16x16xf32>
// The logit scale goes on the [16, 16] slice, and x enters the dot unscaled.
// CHECK:           %[[ECS:[^ ]+]] = stablehlo.multiply %[[EC]], %{{[^ ]+}} : tensor<16x16xf32>
// CHECK:           stablehlo.dot_general %[[XA]], %[[ECS]], {{.*}} : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.reduce({{.*}}) applies stablehlo.maximum across dimensions = [1] : (tensor<8x16xf32>, tensor<f32>) -> tensor<8xf32>
// CHECK:           stablehlo.exponential %{{[^ ]+}} : tensor<8x16xf32>
// No one-hot target in the loop: the ids are not broadcast over the chunk.
// CHECK-NOT:       stablehlo.broadcast_in_dim %[[IDS]]
// CHECK:           stablehlo.return %[[EA]], %[[XA]],
// CHECK:         }
// The target logit: each token's own embedding row, gathered once.
// CHECK:         "stablehlo.gather"(%[[E]], %{{[^)]+}}) {{.*}} : (tensor<50x16xf32>, tensor<8x1xi32>) -> tensor<8x16xf32>
// CHECK:         return {{.*}} : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>

func.func public @forward_ids(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
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
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<8x50xf32>
  %21 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %22 = stablehlo.multiply %20, %21 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %24 = stablehlo.negate %23 : tensor<8xf32>
  %25 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %26 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %24, %25, %17, %26 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
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

// The layer's forward (loss and per-token argmax): the argmax is a loop result.
// CHECK-LABEL: func.func public @forward_ids_argmax(
// CHECK:         %[[LOOP:[^:]+]]:{{[0-9]+}} = stablehlo.while(
// CHECK:           stablehlo.dot_general {{.*}} : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32>
// CHECK:         return %{{[^ ]+}}, %[[LOOP]]#{{[0-9]+}} : tensor<f32>, tensor<8xi32>

func.func public @forward_ids_argmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_0 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %5 = stablehlo.divide %4, %cst_0 : tensor<f32>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.add %5, %cst_1 : tensor<f32>
  return %6, %2#1 : tensor<f32>, tensor<8xi32>
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
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<8x50xf32>
  %21 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %22 = stablehlo.multiply %20, %21 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %24 = stablehlo.negate %23 : tensor<8xf32>
  %25 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %26 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %24, %25, %17, %26 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
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
