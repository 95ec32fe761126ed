// RUN: gshard-opt %s --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=16})' | FileCheck %s --check-prefixes=CHECK,CHUNK
// RUN: gshard-opt %s --pass-pipeline='builtin.module(gshard-fuse-fwd-bwd{token-chunk=4},gshard-chunk-softmax)' | FileCheck %s --check-prefixes=CHECK,FUSE
// RUN: gshard-opt %s --pass-pipeline='builtin.module(gshard-fuse-fwd-bwd{token-chunk=4},gshard-chunk-softmax)' | FileCheck %s --check-prefix=GONE

// A GRPO-style loss, `sum(per_example_xent) - 1e-3 * sum(per_example_entropy)` at
// temperature 0.8 (contract version 4, `with_entropy = true`): the forward
// composite has a fifth result and the gradient two more operands (the entropy
// and its cotangent). The chunked loops carry one more `[T]` statistic, summed
// in the same variadic reduce as the sum of exponentials, so no `[T, C]`
// buffer is added; the fused sweep folds the entropy's cotangent into its one
// loop. Inputs: `python tools/make_lit_inputs.py --trim value_and_grad_entropy`.

// GONE-NOT: stablehlo.composite
// GONE-NOT: tensor<8x50xf32>

// CHECK-LABEL: func.func public @value_and_grad_entropy(
// CHUNK:         stablehlo.while
// CHUNK:         stablehlo.reduce({{.*}}), ({{.*}}) across dimensions = [1] : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<f32>, tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>)
// CHUNK:         gshard.plan = "gshard-chunk-softmax: token_chunk=8 vocab_chunk=16"
// FUSE:          stablehlo.while{{.*}}gshard.plan = "gshard-fuse-fwd-bwd: token_chunk=4 accumulator=f32"
// FUSE:          stablehlo.reduce({{.*}}), ({{.*}}) across dimensions = [1] : (tensor<4x50xf32>, tensor<4x50xf32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>)

func.func public @value_and_grad_entropy(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xi32>) -> (tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>) {
  %0 = stablehlo.reshape %arg2 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1:5 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, precision = "DEFAULT", soft_cap_logits = 0.000000e+00 : f64, temperature = 8.000000e-01 : f64, use_tgt_labels_size_as_loss_denominator = true, with_entropy = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 4 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %2 = stablehlo.reduce(%1#0 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %3 = stablehlo.reduce(%1#4 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_1 = stablehlo.constant dense<1.000000e-03> : tensor<f32>
  %4 = stablehlo.multiply %cst_1, %3 : tensor<f32>
  %5 = stablehlo.subtract %2, %4 : tensor<f32>
  %cst_2 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %6 = stablehlo.negate %cst_2 : tensor<f32>
  %cst_3 = stablehlo.constant dense<1.000000e-03> : tensor<f32>
  %7 = stablehlo.multiply %cst_3, %6 : tensor<f32>
  %8 = stablehlo.broadcast_in_dim %7, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_4 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %9 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = stablehlo.broadcast_in_dim %cst_6, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %12:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %1#2, %9, %10, %11, %1#4, %8 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, precision = "DEFAULT", soft_cap_logits = 0.000000e+00 : f64, temperature = 8.000000e-01 : f64, use_tgt_labels_size_as_loss_denominator = true, with_entropy = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 4 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
  return %5, %12#0, %12#1 : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<8.000000e-01> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %4 = stablehlo.divide %2, %3 : tensor<8x50xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %5 = stablehlo.reduce(%4 init: %cst_1) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_2 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %7 = stablehlo.maximum %6, %5 : tensor<8xf32>
  %8 = stablehlo.is_finite %7 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %9 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %10 = stablehlo.select %8, %7, %9 : tensor<8xi1>, tensor<8xf32>
  %11 = stablehlo.broadcast_in_dim %10, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %12 = stablehlo.broadcast_in_dim %11, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %13 = stablehlo.subtract %4, %12 : tensor<8x50xf32>
  %14 = stablehlo.exponential %13 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %15 = stablehlo.reduce(%14 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %16 = stablehlo.sign %15 : tensor<8xf32>
  %17 = stablehlo.abs %15 : tensor<8xf32>
  %18 = stablehlo.log %17 : tensor<8xf32>
  %19 = stablehlo.add %18, %10 : tensor<8xf32>
  %20 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %21 = stablehlo.broadcast_in_dim %19, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %22 = stablehlo.broadcast_in_dim %21, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %23 = stablehlo.subtract %4, %22 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %24 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %25 = stablehlo.compare EQ, %20, %24, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %26 = stablehlo.multiply %23, %20 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %27 = call @_where(%25, %cst_6, %26) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %cst_7 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %28 = stablehlo.reduce(%27 init: %cst_7) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %29 = stablehlo.negate %28 : tensor<8xf32>
  %30 = call @argmax(%4) : (tensor<8x50xf32>) -> tensor<8xi32>
  %31 = stablehlo.multiply %19, %19 : tensor<8xf32>
  %32 = stablehlo.broadcast_in_dim %19, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %33 = stablehlo.broadcast_in_dim %32, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %34 = stablehlo.subtract %4, %33 : tensor<8x50xf32>
  %35 = stablehlo.exponential %34 : tensor<8x50xf32>
  %cst_8 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %36 = stablehlo.broadcast_in_dim %cst_8, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %37 = stablehlo.compare EQ, %35, %36, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %cst_9 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %38 = call @_where(%37, %cst_9, %4) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %39 = stablehlo.multiply %35, %38 : tensor<8x50xf32>
  %cst_10 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %40 = stablehlo.reduce(%39 init: %cst_10) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %41 = stablehlo.subtract %19, %40 : tensor<8xf32>
  return %29, %30, %19, %31, %41 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>
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
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>, %arg3: tensor<8xf32>, %arg4: tensor<8xf32>, %arg5: tensor<8xf32>, %arg6: tensor<8xf32>, %arg7: tensor<8xf32>, %arg8: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<8.000000e-01> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %4 = stablehlo.divide %2, %3 : tensor<8x50xf32>
  %5 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %6 = stablehlo.broadcast_in_dim %5, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %7 = stablehlo.subtract %4, %6 : tensor<8x50xf32>
  %8 = stablehlo.exponential %7 : tensor<8x50xf32>
  %9 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %11 = stablehlo.multiply %10, %arg3 : tensor<8xf32>
  %12 = stablehlo.multiply %11, %arg6 : tensor<8xf32>
  %13 = stablehlo.add %arg5, %12 : tensor<8xf32>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %14 = stablehlo.reduce(%9 init: %cst_2) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %15 = stablehlo.broadcast_in_dim %14, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %16 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %17 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %18 = stablehlo.multiply %8, %17 : tensor<8x50xf32>
  %19 = stablehlo.subtract %18, %9 : tensor<8x50xf32>
  %20 = stablehlo.broadcast_in_dim %16, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.multiply %20, %19 : tensor<8x50xf32>
  %22 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %23 = stablehlo.broadcast_in_dim %22, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %24 = stablehlo.multiply %23, %8 : tensor<8x50xf32>
  %25 = stablehlo.add %21, %24 : tensor<8x50xf32>
  %26 = stablehlo.subtract %arg3, %arg7 : tensor<8xf32>
  %27 = stablehlo.broadcast_in_dim %26, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %28 = stablehlo.broadcast_in_dim %27, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %29 = stablehlo.subtract %4, %28 : tensor<8x50xf32>
  %30 = stablehlo.broadcast_in_dim %arg8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %31 = stablehlo.negate %30 : tensor<8x1xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %32 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %33 = stablehlo.compare EQ, %8, %32, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %34 = stablehlo.multiply %8, %29 : tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %35 = call @_where(%33, %cst_4, %34) : (tensor<8x50xi1>, tensor<f32>, tensor<8x50xf32>) -> tensor<8x50xf32>
  %36 = stablehlo.broadcast_in_dim %31, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %37 = stablehlo.multiply %36, %35 : tensor<8x50xf32>
  %38 = stablehlo.add %25, %37 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<8.000000e-01> : tensor<f32>
  %39 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %40 = stablehlo.divide %38, %39 : tensor<8x50xf32>
  %41 = stablehlo.dot_general %40, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<50x16xf32>) -> tensor<8x16xf32>
  %cst_6 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %42 = stablehlo.broadcast_in_dim %cst_6, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %43 = stablehlo.multiply %42, %41 : tensor<8x16xf32>
  %cst_7 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %44 = stablehlo.broadcast_in_dim %cst_7, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %45 = stablehlo.multiply %arg0, %44 : tensor<8x16xf32>
  %46 = stablehlo.dot_general %40, %45, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<8x16xf32>) -> tensor<50x16xf32>
  return %43, %46 : tensor<8x16xf32>, tensor<50x16xf32>
}
