// RUN: gshard-opt %s --split-input-file --pass-pipeline='gshard-chunk-softmax{vocab-chunk=16 token-chunk=4}' | FileCheck %s --check-prefix=TOKENS
// RUN: gshard-opt %s --split-input-file --pass-pipeline='gshard-chunk-softmax' | FileCheck %s --check-prefix=DEFAULT
// RUN: gshard-opt %s --split-input-file --pass-pipeline='gshard-chunk-softmax{memory-budget-mib=0.001}' | FileCheck %s --check-prefix=TINY

// Chunk sizes from the pass options. token-chunk=4 adds an outer loop over
// blocks of 4 of the 8 tokens around the vocab loop, whose per-token results
// are written back with dynamic_update_slice. With no options the 32 MiB
// default budget holds a whole [8, 50] chunk: one vocab chunk, no token loop.
// A tiny budget forces token blocks smaller than 8.
// Inputs: `python tools/make_lit_inputs.py --trim forward_ids value_and_grad_ids`.

// TOKENS-LABEL: func.func public @forward_ids(
// TOKENS-SAME:      %[[X:[^:]+]]: tensor<8x16xf32>, %{{[^:]+}}: tensor<50x16xf32>, %[[IDS:[^:]+]]: tensor<8xi32>)
// The outer loop carries x and the ids (loop invariants of JAX's fori_loop)
// and, last, the four per-token results.
// TOKENS:         stablehlo.while(%[[XA:[^ ]+]] = %[[X]], %[[IDSA:[^ ]+]] = %[[IDS]],
// TOKENS-SAME:      tensor<i32>, tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32> attributes {gshard.plan = "gshard-chunk-softmax: token_chunk=4 vocab_chunk=16"}
// TOKENS:         } do {
// TOKENS:           stablehlo.dynamic_slice %[[XA]], {{.*}} sizes = [4, 16] : (tensor<8x16xf32>, tensor<i32>, tensor<i32>) -> tensor<4x16xf32>
// TOKENS:           stablehlo.dynamic_slice %[[IDSA]], {{.*}} sizes = [4] : (tensor<8xi32>, tensor<i32>) -> tensor<4xi32>
// TOKENS:           stablehlo.while(
// TOKENS:             stablehlo.dot_general {{.*}} : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
// TOKENS:             stablehlo.return
// TOKENS:           stablehlo.dynamic_update_slice {{.*}} : (tensor<8xi32>, tensor<4xi32>, tensor<i32>) -> tensor<8xi32>
// TOKENS:           stablehlo.return

// DEFAULT-LABEL: func.func public @forward_ids(
// DEFAULT-NOT:     sizes = [4, 16]
// DEFAULT:         stablehlo.while(
// DEFAULT-NOT:     stablehlo.while(
// DEFAULT:           stablehlo.dot_general {{.*}} : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
// DEFAULT-NOT:     stablehlo.while(
// DEFAULT:         return

// TINY-LABEL: func.func public @forward_ids(
// TINY:           stablehlo.dynamic_slice {{.*}} : (tensor<8x16xf32>, tensor<i32>, tensor<i32>) -> tensor<{{[1-7]}}x16xf32>
// TINY:           stablehlo.while(

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

// The gradient under token blocks: d_x is written back block by block, the
// d_embedding accumulator [50, 16] is carried across all blocks.
// TOKENS-LABEL: func.func public @value_and_grad_ids(
// The outer loop's last carry, d_embedding, seeds the inner loop's last carry,
// and the inner loop's result is what the outer loop carries on.
// TOKENS:         stablehlo.while({{.*}}, %[[DE:[^ ]+]] = %{{[^ ]+}}) : {{.*}}tensor<i32>, tensor<8x16xf32>, tensor<50x16xf32> attributes {gshard.plan = "gshard-chunk-softmax: token_chunk=4 vocab_chunk=16"}
// TOKENS:           %[[INNER:[^:]+]]:{{[0-9]+}} = stablehlo.while({{.*}}, %{{[^ ]+}} = %[[DE]]) : {{.*}}tensor<i32>, tensor<4x16xf32>, tensor<50x16xf32>{{$}}
// TOKENS:             stablehlo.dot_general {{.*}} : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
// TOKENS:             stablehlo.dot_general {{.*}} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<16x16xf32>
// TOKENS:           stablehlo.dynamic_update_slice {{.*}} : (tensor<8x16xf32>, tensor<4x16xf32>, tensor<i32>, tensor<i32>) -> tensor<8x16xf32>
// TOKENS:           stablehlo.return {{.*}}, %[[INNER]]#{{[0-9]+}} : {{.*}}, tensor<8x16xf32>, tensor<50x16xf32>{{$}}

// DEFAULT-LABEL: func.func public @value_and_grad_ids(
// TINY-LABEL: func.func public @value_and_grad_ids(

func.func public @value_and_grad_ids(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>) {
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
  %cst_2 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %7 = stablehlo.divide %cst_2, %cst_3 : tensor<f32>
  %8 = stablehlo.broadcast_in_dim %7, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %9 = stablehlo.multiply %8, %1 : tensor<8xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %12:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %9, %10, %11 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
  return %6, %12#0, %12#1 : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>
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
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>, %arg3: tensor<8xf32>, %arg4: tensor<8xf32>, %arg5: tensor<8xf32>, %arg6: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %3 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %5 = stablehlo.subtract %2, %4 : tensor<8x50xf32>
  %6 = stablehlo.exponential %5 : tensor<8x50xf32>
  %7 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %8 = stablehlo.reduce(%7 init: %cst_0) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %11 = stablehlo.multiply %10, %arg3 : tensor<8xf32>
  %12 = stablehlo.multiply %11, %arg6 : tensor<8xf32>
  %13 = stablehlo.add %arg5, %12 : tensor<8xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %16 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %17 = stablehlo.multiply %6, %16 : tensor<8x50xf32>
  %18 = stablehlo.subtract %17, %7 : tensor<8x50xf32>
  %19 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %20 = stablehlo.multiply %19, %18 : tensor<8x50xf32>
  %21 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %22 = stablehlo.multiply %21, %6 : tensor<8x50xf32>
  %23 = stablehlo.add %20, %22 : tensor<8x50xf32>
  %24 = stablehlo.dot_general %23, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<50x16xf32>) -> tensor<8x16xf32>
  %cst_2 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %25 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %26 = stablehlo.multiply %25, %24 : tensor<8x16xf32>
  %cst_3 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %27 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %28 = stablehlo.multiply %arg0, %27 : tensor<8x16xf32>
  %29 = stablehlo.dot_general %23, %28, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<8x16xf32>) -> tensor<50x16xf32>
  return %26, %29 : tensor<8x16xf32>, tensor<50x16xf32>
}
