// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=16})' | FileCheck %s --check-prefixes=CHECK,CHUNK
// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-fuse-fwd-bwd{token-chunk=4},gshard-chunk-softmax)' | FileCheck %s --check-prefixes=CHECK,FUSE
// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=16})' | FileCheck %s --check-prefix=GONE

// The logit scale (contract version 5). With `scales_logits = true` the f64
// `logit_scale` multiplies the float32 logits after the matmul: the embedding
// slice enters the dot unscaled, the dot's f32 result is multiplied by 0.5, and
// the gradient's matmuls take the logits' cotangent times 0.5 (so `d_x` and
// `d_embedding` need no scaling after). Inputs: `python tools/make_lit_inputs.py
// --trim value_and_grad_logit_scale` and `--trim forward_ids` (the latter as
// version 4, without the attribute, and as version 5 with it false): older
// composites read `scales_logits = false`, Praxis's `M**-0.5` on the inputs
// (here on the embedding slice, rounded as the inputs would be).

// GONE-NOT: stablehlo.composite
// GONE-NOT: tensor<8x50xf32>

// CHECK-LABEL: func.func public @value_and_grad_logit_scale(
// The loops carry the embedding and x (loop invariants of JAX's fori_loop).
// CHUNK:         stablehlo.while(%[[EA:[^ ]+]] = %arg1, %[[XA:[^ ]+]] = %arg0,
// CHUNK-SAME:      gshard.plan = "gshard-chunk-softmax: token_chunk=8 vocab_chunk=16"
// CHUNK:         %[[E:[^ ]+]] = stablehlo.dynamic_slice %[[EA]], {{.*}} sizes = [16, 16]
// CHUNK:         %[[Z:[^ ]+]] = stablehlo.dot_general %[[XA]], %[[E]], contracting_dims = [1] x [1]{{.*}} : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32>
// CHUNK-NEXT:    %[[S:[^ ]+]] = stablehlo.constant dense<5.000000e-01> : tensor<f32>
// CHUNK-NEXT:    %[[SB:[^ ]+]] = stablehlo.broadcast_in_dim %[[S]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHUNK-NEXT:    stablehlo.multiply %[[Z]], %[[SB]] : tensor<8x16xf32>
// CHUNK:         stablehlo.while(%[[GEA:[^ ]+]] = %arg1, %[[GXA:[^ ]+]] = %arg0,
// CHUNK-SAME:      gshard.plan = "gshard-chunk-softmax: token_chunk=8 vocab_chunk=16"
// CHUNK:         %[[GE:[^ ]+]] = stablehlo.dynamic_slice %[[GEA]], {{.*}} sizes = [16, 16]
// CHUNK:         %[[GZ:[^ ]+]] = stablehlo.dot_general %[[GXA]], %[[GE]], contracting_dims = [1] x [1]
// CHUNK-NEXT:    %[[GZS:[^ ]+]] = stablehlo.constant dense<5.000000e-01> : tensor<f32>
// CHUNK-NEXT:    %[[GZSB:[^ ]+]] = stablehlo.broadcast_in_dim %[[GZS]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHUNK-NEXT:    stablehlo.multiply %[[GZ]], %[[GZSB]] : tensor<8x16xf32>
// CHUNK:         %[[GS:[^ ]+]] = stablehlo.constant dense<5.000000e-01> : tensor<f32>
// CHUNK-NEXT:    %[[GSB:[^ ]+]] = stablehlo.broadcast_in_dim %[[GS]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHUNK-NEXT:    %[[DZ:[^ ]+]] = stablehlo.multiply %{{[^ ]+}}, %[[GSB]] : tensor<8x16xf32>
// CHUNK-NEXT:    %[[DX:[^ ]+]] = stablehlo.dot_general %[[DZ]], %[[GE]], contracting_dims = [1] x [0]
// CHUNK-NEXT:    stablehlo.add %{{[^ ]+}}, %[[DX]] : tensor<8x16xf32>
// CHUNK-NEXT:    stablehlo.dot_general %[[DZ]], %[[GXA]], contracting_dims = [0] x [0]
// FUSE:          stablehlo.while({{.*}}%[[EA:[^ ]+]] = %arg1,
// FUSE-SAME:       gshard.plan = "gshard-fuse-fwd-bwd: token_chunk=4
// FUSE:          %[[E:[^ ]+]] = stablehlo.dynamic_slice %[[EA]], {{.*}} sizes = [50, 16]
// FUSE-NEXT:     %[[Z:[^ ]+]] = stablehlo.dot_general %{{[^ ]+}}, %[[E]], contracting_dims = [1] x [1]{{.*}} : (tensor<4x16xf32>, tensor<50x16xf32>) -> tensor<4x50xf32>
// FUSE-NEXT:     %[[S:[^ ]+]] = stablehlo.constant dense<5.000000e-01> : tensor<f32>
// FUSE-NEXT:     %[[SB:[^ ]+]] = stablehlo.broadcast_in_dim %[[S]], dims = [] : (tensor<f32>) -> tensor<4x50xf32>
// FUSE-NEXT:     stablehlo.multiply %[[Z]], %[[SB]] : tensor<4x50xf32>
// The logits' cotangent (after the log of the block's sum-exp) times 0.5 feeds
// d_x and the inner loop's d_embedding dot.
// FUSE:          stablehlo.log
// FUSE:          %[[DZ0:[^ ]+]] = stablehlo.add %{{[^ ]+}}, %{{[^ ]+}} : tensor<4x50xf32>
// FUSE-NEXT:     %[[GS:[^ ]+]] = stablehlo.constant dense<5.000000e-01> : tensor<f32>
// FUSE-NEXT:     %[[GSB:[^ ]+]] = stablehlo.broadcast_in_dim %[[GS]], dims = [] : (tensor<f32>) -> tensor<4x50xf32>
// FUSE-NEXT:     %[[DZ:[^ ]+]] = stablehlo.multiply %[[DZ0]], %[[GSB]] : tensor<4x50xf32>
// FUSE-NEXT:     stablehlo.dot_general %[[DZ]], %[[EA]], contracting_dims = [1] x [0]{{.*}} : (tensor<4x50xf32>, tensor<50x16xf32>) -> tensor<4x16xf32>
// FUSE:          stablehlo.while(%{{[^ ]+}} = %[[DZ]],

func.func public @value_and_grad_logit_scale(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 5.000000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, precision = "DEFAULT", scales_logits = true, soft_cap_logits = 0.000000e+00 : f64, temperature = 1.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, with_entropy = false, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 5 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_0 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %5 = stablehlo.divide %4, %cst_0 : tensor<f32>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.add %5, %cst_1 : tensor<f32>
  %cst_2 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %7 = stablehlo.divide %cst_2, %cst_3 : tensor<f32>
  %8 = stablehlo.broadcast_in_dim %7, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %9 = stablehlo.multiply %8, %1 : tensor<8xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %12:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %9, %10, %11 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 5.000000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, precision = "DEFAULT", scales_logits = true, soft_cap_logits = 0.000000e+00 : f64, temperature = 1.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, with_entropy = false, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 5 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
  return %6, %12#0, %12#1 : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst = stablehlo.constant dense<5.000000e-01> : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.multiply %0, %1 : tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %5 = stablehlo.is_finite %4 : (tensor<8x1xf32>) -> tensor<8x1xi1>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = call @_where(%5, %4, %cst_1) : (tensor<8x1xi1>, tensor<8x1xf32>, tensor<f32>) -> tensor<8x1xf32>
  %7 = stablehlo.broadcast_in_dim %6, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %8 = stablehlo.compare EQ, %2, %7, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %9 = stablehlo.broadcast_in_dim %6, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %10 = stablehlo.subtract %2, %9 : tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = call @_where_0(%8, %cst_2, %10) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %12 = stablehlo.exponential %11 : tensor<8x50xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.log %14 : tensor<8x1xf32>
  %16 = stablehlo.add %6, %15 : tensor<8x1xf32>
  %17 = stablehlo.reshape %16 : (tensor<8x1xf32>) -> tensor<8xf32>
  %18 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %19 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %20 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.compare EQ, %2, %20, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %22 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %23 = stablehlo.subtract %2, %22 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %24 = call @_where_0(%21, %cst_4, %23) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %25 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %26 = stablehlo.compare EQ, %18, %25, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %27 = stablehlo.multiply %24, %18 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %28 = call @_where_0(%26, %cst_6, %27) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_7 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %29 = stablehlo.reduce(%28 init: %cst_7) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %30 = stablehlo.negate %29 : tensor<8xf32>
  %31 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %32 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %30, %31, %17, %32 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @_where(%arg0: tensor<8x1xi1>, %arg1: tensor<8x1xf32>, %arg2: tensor<f32>) -> tensor<8x1xf32> {
  %0 = stablehlo.convert %arg2 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x1xf32>
  %2 = stablehlo.select %arg0, %arg1, %1 : tensor<8x1xi1>, tensor<8x1xf32>
  return %2 : tensor<8x1xf32>
}
func.func private @_where_0(%arg0: tensor<8x50xi1>, %arg1: tensor<f32>, %arg2: tensor<8x50xf32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.select %arg0, %1, %arg2 : tensor<8x50xi1>, tensor<8x50xf32>
  return %2 : tensor<8x50xf32>
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
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>, %arg3: tensor<8xf32>, %arg4: tensor<8xf32>, %arg5: tensor<8xf32>, %arg6: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>) {
  %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst = stablehlo.constant dense<5.000000e-01> : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.multiply %0, %1 : tensor<8x50xf32>
  %3 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %5 = stablehlo.compare EQ, %2, %4, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %6 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %7 = stablehlo.subtract %2, %6 : tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %8 = call @_where_0(%5, %cst_0, %7) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %9 = stablehlo.exponential %8 : tensor<8x50xf32>
  %10 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %11 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %12 = stablehlo.multiply %11, %arg3 : tensor<8xf32>
  %13 = stablehlo.multiply %12, %arg6 : tensor<8xf32>
  %14 = stablehlo.add %arg5, %13 : tensor<8xf32>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %15 = stablehlo.reduce(%10 init: %cst_2) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %16 = stablehlo.broadcast_in_dim %15, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %17 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %18 = stablehlo.broadcast_in_dim %16, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %19 = stablehlo.multiply %9, %18 : tensor<8x50xf32>
  %20 = stablehlo.subtract %19, %10 : tensor<8x50xf32>
  %21 = stablehlo.broadcast_in_dim %17, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %22 = stablehlo.multiply %21, %20 : tensor<8x50xf32>
  %23 = stablehlo.broadcast_in_dim %14, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %25 = stablehlo.multiply %24, %9 : tensor<8x50xf32>
  %26 = stablehlo.add %22, %25 : tensor<8x50xf32>
  %cst_3 = stablehlo.constant dense<5.000000e-01> : tensor<f32>
  %27 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %28 = stablehlo.multiply %26, %27 : tensor<8x50xf32>
  %29 = stablehlo.dot_general %28, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<50x16xf32>) -> tensor<8x16xf32>
  %30 = stablehlo.dot_general %28, %arg0, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<8x16xf32>) -> tensor<50x16xf32>
  return %29, %30 : tensor<8x16xf32>, tensor<50x16xf32>
}

// -----

// CHECK-LABEL: func.func public @forward_ids_version_4(
// CHECK:         stablehlo.while(%[[EA:[^ ]+]] = %arg1, %[[XA:[^ ]+]] = %arg0,
// CHECK:         %[[E:[^ ]+]] = stablehlo.dynamic_slice %[[EA]], {{.*}} sizes = [{{16|50}}, 16]
// CHECK-NEXT:    %[[S:[^ ]+]] = stablehlo.constant dense<2.500000e-01> : tensor<f32>
// CHECK-NEXT:    %[[SB:[^ ]+]] = stablehlo.broadcast_in_dim %[[S]], dims = [] : (tensor<f32>) -> tensor<{{16|50}}x16xf32>
// CHECK-NEXT:    %[[ES:[^ ]+]] = stablehlo.multiply %[[E]], %[[SB]] : tensor<{{16|50}}x16xf32>
// CHECK:         %[[Z:[^ ]+]] = stablehlo.dot_general %[[XA]], %[[ES]], contracting_dims = [1] x [1]
// CHECK-NOT:     stablehlo.multiply {{(%[^ ]+, )?}}%[[Z]]{{[ ,]}}
// CHECK:         return

func.func public @forward_ids_version_4(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, precision = "DEFAULT", soft_cap_logits = 0.000000e+00 : f64, temperature = 1.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, with_entropy = false, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 4 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %5 = stablehlo.is_finite %4 : (tensor<8x1xf32>) -> tensor<8x1xi1>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = call @_where(%5, %4, %cst_1) : (tensor<8x1xi1>, tensor<8x1xf32>, tensor<f32>) -> tensor<8x1xf32>
  %7 = stablehlo.broadcast_in_dim %6, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %8 = stablehlo.compare EQ, %2, %7, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %9 = stablehlo.broadcast_in_dim %6, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %10 = stablehlo.subtract %2, %9 : tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = call @_where_0(%8, %cst_2, %10) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %12 = stablehlo.exponential %11 : tensor<8x50xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.log %14 : tensor<8x1xf32>
  %16 = stablehlo.add %6, %15 : tensor<8x1xf32>
  %17 = stablehlo.reshape %16 : (tensor<8x1xf32>) -> tensor<8xf32>
  %18 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %19 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %20 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.compare EQ, %2, %20, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %22 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %23 = stablehlo.subtract %2, %22 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %24 = call @_where_0(%21, %cst_4, %23) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %25 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %26 = stablehlo.compare EQ, %18, %25, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %27 = stablehlo.multiply %24, %18 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %28 = call @_where_0(%26, %cst_6, %27) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_7 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %29 = stablehlo.reduce(%28 init: %cst_7) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %30 = stablehlo.negate %29 : tensor<8xf32>
  %31 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %32 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %30, %31, %17, %32 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @_where(%arg0: tensor<8x1xi1>, %arg1: tensor<8x1xf32>, %arg2: tensor<f32>) -> tensor<8x1xf32> {
  %0 = stablehlo.convert %arg2 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x1xf32>
  %2 = stablehlo.select %arg0, %arg1, %1 : tensor<8x1xi1>, tensor<8x1xf32>
  return %2 : tensor<8x1xf32>
}
func.func private @_where_0(%arg0: tensor<8x50xi1>, %arg1: tensor<f32>, %arg2: tensor<8x50xf32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.select %arg0, %1, %arg2 : tensor<8x50xi1>, tensor<8x50xf32>
  return %2 : tensor<8x50xf32>
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

// CHECK-LABEL: func.func public @forward_ids_version_5_praxis(
// CHECK:         stablehlo.while(%[[EA:[^ ]+]] = %arg1, %[[XA:[^ ]+]] = %arg0,
// CHECK:         %[[E:[^ ]+]] = stablehlo.dynamic_slice %[[EA]], {{.*}} sizes = [{{16|50}}, 16]
// CHECK-NEXT:    %[[S:[^ ]+]] = stablehlo.constant dense<2.500000e-01> : tensor<f32>
// CHECK-NEXT:    %[[SB:[^ ]+]] = stablehlo.broadcast_in_dim %[[S]], dims = [] : (tensor<f32>) -> tensor<{{16|50}}x16xf32>
// CHECK-NEXT:    %[[ES:[^ ]+]] = stablehlo.multiply %[[E]], %[[SB]] : tensor<{{16|50}}x16xf32>
// CHECK:         %[[Z:[^ ]+]] = stablehlo.dot_general %[[XA]], %[[ES]], contracting_dims = [1] x [1]
// CHECK-NOT:     stablehlo.multiply {{(%[^ ]+, )?}}%[[Z]]{{[ ,]}}
// CHECK:         return

func.func public @forward_ids_version_5_praxis(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %arg2 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, precision = "DEFAULT", scales_logits = false, soft_cap_logits = 0.000000e+00 : f64, temperature = 1.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, with_entropy = false, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 5 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0, %0#1, %0#2, %0#3 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %5 = stablehlo.is_finite %4 : (tensor<8x1xf32>) -> tensor<8x1xi1>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = call @_where(%5, %4, %cst_1) : (tensor<8x1xi1>, tensor<8x1xf32>, tensor<f32>) -> tensor<8x1xf32>
  %7 = stablehlo.broadcast_in_dim %6, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %8 = stablehlo.compare EQ, %2, %7, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %9 = stablehlo.broadcast_in_dim %6, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %10 = stablehlo.subtract %2, %9 : tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = call @_where_0(%8, %cst_2, %10) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %12 = stablehlo.exponential %11 : tensor<8x50xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.log %14 : tensor<8x1xf32>
  %16 = stablehlo.add %6, %15 : tensor<8x1xf32>
  %17 = stablehlo.reshape %16 : (tensor<8x1xf32>) -> tensor<8xf32>
  %18 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %19 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %20 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.compare EQ, %2, %20, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %22 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %23 = stablehlo.subtract %2, %22 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %24 = call @_where_0(%21, %cst_4, %23) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %25 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %26 = stablehlo.compare EQ, %18, %25, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %27 = stablehlo.multiply %24, %18 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %28 = call @_where_0(%26, %cst_6, %27) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_7 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %29 = stablehlo.reduce(%28 init: %cst_7) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %30 = stablehlo.negate %29 : tensor<8xf32>
  %31 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %32 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %30, %31, %17, %32 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @_where(%arg0: tensor<8x1xi1>, %arg1: tensor<8x1xf32>, %arg2: tensor<f32>) -> tensor<8x1xf32> {
  %0 = stablehlo.convert %arg2 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x1xf32>
  %2 = stablehlo.select %arg0, %arg1, %1 : tensor<8x1xi1>, tensor<8x1xf32>
  return %2 : tensor<8x1xf32>
}
func.func private @_where_0(%arg0: tensor<8x50xi1>, %arg1: tensor<f32>, %arg2: tensor<8x50xf32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.select %arg0, %1, %arg2 : tensor<8x50xi1>, tensor<8x50xf32>
  return %2 : tensor<8x50xf32>
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
