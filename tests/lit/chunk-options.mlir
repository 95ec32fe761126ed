// RUN: gshard-opt %s --split-input-file --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=16})' -o %t
// RUN: FileCheck %s --input-file %t
// RUN: FileCheck %s --input-file %t --check-prefix=GONE

// The layer's options, read from the composite's attributes, applied to each
// [8, 16] logits chunk inside the loops: soft cap 5 (cap * tanh(z / cap)),
// then abs clip 3 (clamp), label smoothing 0.1 with the global V = 50
// (off = 0.1 / 50 = 0.002, never 0.1 / 16), z-loss (logsumexp squared).
// Inputs: `python tools/make_lit_inputs.py --trim soft_cap abs_clip
// label_smoothing z_loss value_and_grad_all_options`.

// GONE-NOT: stablehlo.composite
// GONE-NOT: tensor<8x50xf32>
// GONE-NOT: func.func private
// GONE-NOT: 6.250000e-03

// CHECK-LABEL: func.func public @soft_cap(
// CHECK:         stablehlo.while(
// CHECK:         } do {
// CHECK:           %[[Z:[^ ]+]] = stablehlo.dot_general {{.*}} -> tensor<8x16xf32>
// CHECK:           %[[CAP:[^ ]+]] = stablehlo.constant dense<5.000000e+00> : tensor<f32>
// CHECK:           %[[CAPB:[^ ]+]] = stablehlo.broadcast_in_dim %[[CAP]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHECK:           %[[ZC:[^ ]+]] = stablehlo.divide %[[Z]], %[[CAPB]] : tensor<8x16xf32>
// CHECK:           %[[T:[^ ]+]] = stablehlo.tanh %[[ZC]] : tensor<8x16xf32>
// CHECK:           stablehlo.multiply %{{[^ ]+}}, %[[T]] : tensor<8x16xf32>
// CHECK:           stablehlo.return

func.func public @soft_cap(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 5.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
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
  %cst_0 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %4 = stablehlo.divide %2, %3 : tensor<8x50xf32>
  %5 = stablehlo.tanh %4 : tensor<8x50xf32>
  %cst_1 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %7 = stablehlo.multiply %6, %5 : tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %8 = stablehlo.reduce(%7 init: %cst_2) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_3 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %9 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %10 = stablehlo.maximum %9, %8 : tensor<8xf32>
  %11 = stablehlo.is_finite %10 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %12 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %13 = stablehlo.select %11, %10, %12 : tensor<8xi1>, tensor<8xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %16 = stablehlo.subtract %7, %15 : tensor<8x50xf32>
  %17 = stablehlo.exponential %16 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %18 = stablehlo.reduce(%17 init: %cst_5) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %19 = stablehlo.sign %18 : tensor<8xf32>
  %20 = stablehlo.abs %18 : tensor<8xf32>
  %21 = stablehlo.log %20 : tensor<8xf32>
  %22 = stablehlo.add %21, %13 : tensor<8xf32>
  %23 = stablehlo.broadcast_in_dim %22, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %25 = stablehlo.subtract %7, %24 : tensor<8x50xf32>
  %26 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %27 = stablehlo.multiply %25, %26 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %28 = stablehlo.reduce(%27 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %29 = stablehlo.negate %28 : tensor<8xf32>
  %30 = call @argmax(%7) : (tensor<8x50xf32>) -> tensor<8xi32>
  %31 = stablehlo.multiply %22, %22 : tensor<8xf32>
  return %29, %30, %22, %31 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
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

// CHECK-LABEL: func.func public @abs_clip(
// CHECK-NOT:     stablehlo.tanh
// CHECK:         stablehlo.while(
// CHECK:         } do {
// CHECK:           %[[Z:[^ ]+]] = stablehlo.dot_general {{.*}} -> tensor<8x16xf32>
// The clamp as JAX's clip writes it: min(3, max(-3, z)).
// CHECK-DAG:       %[[LO:[^ ]+]] = stablehlo.constant dense<-3.000000e+00> : tensor<f32>
// CHECK-DAG:       %[[HI:[^ ]+]] = stablehlo.constant dense<3.000000e+00> : tensor<f32>
// CHECK:           %[[LOC:[^ ]+]] = stablehlo.convert %[[LO]] : tensor<f32>
// CHECK:           %[[LOB:[^ ]+]] = stablehlo.broadcast_in_dim %[[LOC]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHECK:           %[[ZLO:[^ ]+]] = stablehlo.maximum %[[LOB]], %[[Z]] : tensor<8x16xf32>
// CHECK:           %[[HIC:[^ ]+]] = stablehlo.convert %[[HI]] : tensor<f32>
// CHECK:           %[[HIB:[^ ]+]] = stablehlo.broadcast_in_dim %[[HIC]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.minimum %[[HIB]], %[[ZLO]] : tensor<8x16xf32>
// CHECK-NOT:     stablehlo.tanh
// CHECK:           stablehlo.return

func.func public @abs_clip(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 3.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
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
  %cst_0 = stablehlo.constant dense<-3.000000e+00> : tensor<f32>
  %cst_1 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %3 = call @clip(%2, %cst_0, %cst_1) : (tensor<8x50xf32>, tensor<f32>, tensor<f32>) -> tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst_2) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_3 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %5 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %6 = stablehlo.maximum %5, %4 : tensor<8xf32>
  %7 = stablehlo.is_finite %6 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %8 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %9 = stablehlo.select %7, %6, %8 : tensor<8xi1>, tensor<8xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %11 = stablehlo.broadcast_in_dim %10, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %12 = stablehlo.subtract %3, %11 : tensor<8x50xf32>
  %13 = stablehlo.exponential %12 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %14 = stablehlo.reduce(%13 init: %cst_5) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %15 = stablehlo.sign %14 : tensor<8xf32>
  %16 = stablehlo.abs %14 : tensor<8xf32>
  %17 = stablehlo.log %16 : tensor<8xf32>
  %18 = stablehlo.add %17, %9 : tensor<8xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %20 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %21 = stablehlo.subtract %3, %20 : tensor<8x50xf32>
  %22 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %23 = stablehlo.multiply %21, %22 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %24 = stablehlo.reduce(%23 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %25 = stablehlo.negate %24 : tensor<8xf32>
  %26 = call @argmax(%3) : (tensor<8x50xf32>) -> tensor<8xi32>
  %27 = stablehlo.multiply %18, %18 : tensor<8xf32>
  return %25, %26, %18, %27 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @clip(%arg0: tensor<8x50xf32>, %arg1: tensor<f32>, %arg2: tensor<f32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.maximum %1, %arg0 : tensor<8x50xf32>
  %3 = stablehlo.convert %arg2 : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %5 = stablehlo.minimum %4, %2 : tensor<8x50xf32>
  return %5 : tensor<8x50xf32>
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

// CHECK-LABEL: func.func public @label_smoothing(
// CHECK:         stablehlo.while(
// CHECK:           stablehlo.return
// CHECK:         stablehlo.constant dense<2.000000e-03>

func.func public @label_smoothing(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
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
  %cst_4 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %22 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %23 = stablehlo.multiply %22, %21 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<2.000000e-03> : tensor<f32>
  %24 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %25 = stablehlo.add %23, %24 : tensor<8x50xf32>
  %26 = stablehlo.multiply %20, %25 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %27 = stablehlo.reduce(%26 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %28 = stablehlo.negate %27 : tensor<8xf32>
  %29 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
  %30 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %28, %29, %17, %30 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
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

// The forward composite's fourth result, logsumexp squared, feeds the z-loss.
// CHECK-LABEL: func.func public @z_loss(
// CHECK:         stablehlo.while(
// CHECK:           stablehlo.return
// CHECK:         %[[SQ:[^ ]+]] = stablehlo.multiply %[[LSE:[^,]+]], %[[LSE]] {{.*}}: tensor<8xf32>
// CHECK:         stablehlo.multiply %[[SQ]], %{{[^ ]+}} : tensor<8xf32>
// CHECK:         stablehlo.constant dense<9.99999974E-5> : tensor<f32>

func.func public @z_loss(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %5 = stablehlo.multiply %2#3, %1 : tensor<8xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.reduce(%5 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_1 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %7 = stablehlo.multiply %cst_1, %6 : tensor<f32>
  %cst_2 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %8 = stablehlo.divide %7, %cst_2 : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %9 = stablehlo.divide %4, %cst_3 : tensor<f32>
  %10 = stablehlo.add %9, %8 : tensor<f32>
  return %10, %2#1 : tensor<f32>, tensor<8xi32>
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

// All options in a training step: the gradient loop recomputes the capped and
// clipped chunk, uses the smoothed target, and pulls the cotangent back
// through the clip (zero where |z| >= 3) and the cap (times 1 - tanh^2).
// CHECK-LABEL: func.func public @value_and_grad_all_options(
// The cap, then the clip of the capped logits (max with -3, min with 3).
// CHECK:         stablehlo.while(
// CHECK:           %[[T:[^ ]+]] = stablehlo.tanh %{{[^ ]+}} : tensor<8x16xf32>
// CHECK:           %[[CAPPED:[^ ]+]] = stablehlo.multiply %{{[^ ]+}}, %[[T]] : tensor<8x16xf32>
// CHECK:           %[[ZLO:[^ ]+]] = stablehlo.maximum %{{[^ ]+}}, %[[CAPPED]] : tensor<8x16xf32>
// CHECK:           stablehlo.minimum %{{[^ ]+}}, %[[ZLO]] : tensor<8x16xf32>
// CHECK:           stablehlo.return
// CHECK:         stablehlo.while({{.*}}) : {{.*}}tensor<i32>, tensor<8x16xf32>, tensor<50x16xf32> attributes
// CHECK:         } do {
// CHECK:           %[[GT:[^ ]+]] = stablehlo.tanh %{{[^ ]+}} : tensor<8x16xf32>
// CHECK:           %[[GCAPPED:[^ ]+]] = stablehlo.multiply %{{[^ ]+}}, %[[GT]] : tensor<8x16xf32>
// CHECK:           %[[GZLO:[^ ]+]] = stablehlo.maximum %{{[^ ]+}}, %[[GCAPPED]] : tensor<8x16xf32>
// CHECK:           stablehlo.minimum %{{[^ ]+}}, %[[GZLO]] : tensor<8x16xf32>
// CHECK:           %[[OFF:[^ ]+]] = stablehlo.constant dense<2.000000e-03> : tensor<f32>
// CHECK:           stablehlo.broadcast_in_dim %[[OFF]], dims = [] : (tensor<f32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.compare LT, {{.*}} : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xi1>
// CHECK:           stablehlo.multiply %[[T:[^,]+]], %[[T]] : tensor<8x16xf32>
// CHECK:           stablehlo.dot_general {{.*}} : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32>
// CHECK:           stablehlo.dot_general {{.*}} : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<16x16xf32>
// CHECK:           stablehlo.return

func.func public @value_and_grad_all_options(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 3.000000e+00 : f64, soft_cap_logits = 5.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %5 = stablehlo.multiply %2#3, %1 : tensor<8xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.reduce(%5 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_1 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %7 = stablehlo.multiply %cst_1, %6 : tensor<f32>
  %cst_2 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %8 = stablehlo.divide %7, %cst_2 : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %9 = stablehlo.divide %4, %cst_3 : tensor<f32>
  %10 = stablehlo.add %9, %8 : tensor<f32>
  %cst_4 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_5 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %11 = stablehlo.divide %cst_4, %cst_5 : tensor<f32>
  %cst_6 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_7 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %12 = stablehlo.divide %cst_6, %cst_7 : tensor<f32>
  %cst_8 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %13 = stablehlo.multiply %cst_8, %12 : tensor<f32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %15 = stablehlo.multiply %14, %1 : tensor<8xf32>
  %16 = stablehlo.broadcast_in_dim %11, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %17 = stablehlo.multiply %16, %1 : tensor<8xf32>
  %cst_9 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %18 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %19:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %17, %18, %15 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 3.000000e+00 : f64, soft_cap_logits = 5.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
  return %10, %19#0, %19#1 : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
  %cst_0 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %4 = stablehlo.divide %2, %3 : tensor<8x50xf32>
  %5 = stablehlo.tanh %4 : tensor<8x50xf32>
  %cst_1 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %7 = stablehlo.multiply %6, %5 : tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<-3.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %8 = call @clip(%7, %cst_2, %cst_3) : (tensor<8x50xf32>, tensor<f32>, tensor<f32>) -> tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %9 = stablehlo.reduce(%8 init: %cst_4) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_5 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %11 = stablehlo.maximum %10, %9 : tensor<8xf32>
  %12 = stablehlo.is_finite %11 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.broadcast_in_dim %cst_6, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.select %12, %11, %13 : tensor<8xi1>, tensor<8xf32>
  %15 = stablehlo.broadcast_in_dim %14, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %16 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %17 = stablehlo.subtract %8, %16 : tensor<8x50xf32>
  %18 = stablehlo.exponential %17 : tensor<8x50xf32>
  %cst_7 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %19 = stablehlo.reduce(%18 init: %cst_7) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %20 = stablehlo.sign %19 : tensor<8xf32>
  %21 = stablehlo.abs %19 : tensor<8xf32>
  %22 = stablehlo.log %21 : tensor<8xf32>
  %23 = stablehlo.add %22, %14 : tensor<8xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %25 = stablehlo.broadcast_in_dim %24, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %26 = stablehlo.subtract %8, %25 : tensor<8x50xf32>
  %27 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %cst_8 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %28 = stablehlo.broadcast_in_dim %cst_8, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %29 = stablehlo.multiply %28, %27 : tensor<8x50xf32>
  %cst_9 = stablehlo.constant dense<2.000000e-03> : tensor<f32>
  %30 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %31 = stablehlo.add %29, %30 : tensor<8x50xf32>
  %32 = stablehlo.multiply %26, %31 : tensor<8x50xf32>
  %cst_10 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %33 = stablehlo.reduce(%32 init: %cst_10) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %34 = stablehlo.negate %33 : tensor<8xf32>
  %35 = call @argmax(%8) : (tensor<8x50xf32>) -> tensor<8xi32>
  %36 = stablehlo.multiply %23, %23 : tensor<8xf32>
  return %34, %35, %23, %36 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @clip(%arg0: tensor<8x50xf32>, %arg1: tensor<f32>, %arg2: tensor<f32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg1 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.maximum %1, %arg0 : tensor<8x50xf32>
  %3 = stablehlo.convert %arg2 : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %5 = stablehlo.minimum %4, %2 : tensor<8x50xf32>
  return %5 : tensor<8x50xf32>
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
  %cst_0 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %4 = stablehlo.divide %2, %3 : tensor<8x50xf32>
  %5 = stablehlo.tanh %4 : tensor<8x50xf32>
  %cst_1 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %6 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %7 = stablehlo.multiply %6, %5 : tensor<8x50xf32>
  %cst_2 = stablehlo.constant dense<-3.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %8 = call @clip(%7, %cst_2, %cst_3) : (tensor<8x50xf32>, tensor<f32>, tensor<f32>) -> tensor<8x50xf32>
  %9 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %11 = stablehlo.subtract %8, %10 : tensor<8x50xf32>
  %12 = stablehlo.exponential %11 : tensor<8x50xf32>
  %13 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
  %cst_4 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %14 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %15 = stablehlo.multiply %14, %13 : tensor<8x50xf32>
  %cst_5 = stablehlo.constant dense<2.000000e-03> : tensor<f32>
  %16 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %17 = stablehlo.add %15, %16 : tensor<8x50xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %18 = stablehlo.reduce(%17 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %cst_7 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %20 = stablehlo.broadcast_in_dim %cst_7, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %21 = stablehlo.multiply %20, %arg3 : tensor<8xf32>
  %22 = stablehlo.multiply %21, %arg6 : tensor<8xf32>
  %23 = stablehlo.add %arg5, %22 : tensor<8xf32>
  %24 = stablehlo.broadcast_in_dim %23, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %25 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %26 = stablehlo.broadcast_in_dim %19, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %27 = stablehlo.multiply %12, %26 : tensor<8x50xf32>
  %28 = stablehlo.subtract %27, %17 : tensor<8x50xf32>
  %29 = stablehlo.broadcast_in_dim %25, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %30 = stablehlo.multiply %29, %28 : tensor<8x50xf32>
  %31 = stablehlo.broadcast_in_dim %24, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
  %32 = stablehlo.multiply %31, %12 : tensor<8x50xf32>
  %33 = stablehlo.add %30, %32 : tensor<8x50xf32>
  %cst_8 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %34 = stablehlo.broadcast_in_dim %cst_8, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %35 = stablehlo.divide %2, %34 : tensor<8x50xf32>
  %36 = stablehlo.tanh %35 : tensor<8x50xf32>
  %cst_9 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %37 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %38 = stablehlo.multiply %37, %36 : tensor<8x50xf32>
  %39 = stablehlo.abs %38 : tensor<8x50xf32>
  %cst_10 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %40 = stablehlo.broadcast_in_dim %cst_10, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %41 = stablehlo.compare LT, %39, %40, FLOAT : (tensor<8x50xf32>, tensor<8x50xf32>) -> tensor<8x50xi1>
  %cst_11 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %42 = call @_where(%41, %33, %cst_11) : (tensor<8x50xi1>, tensor<8x50xf32>, tensor<f32>) -> tensor<8x50xf32>
  %cst_12 = stablehlo.constant dense<5.000000e+00> : tensor<f32>
  %43 = stablehlo.broadcast_in_dim %cst_12, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %44 = stablehlo.divide %2, %43 : tensor<8x50xf32>
  %45 = stablehlo.tanh %44 : tensor<8x50xf32>
  %46 = stablehlo.multiply %45, %45 : tensor<8x50xf32>
  %cst_13 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %47 = stablehlo.broadcast_in_dim %cst_13, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %48 = stablehlo.subtract %47, %46 : tensor<8x50xf32>
  %49 = stablehlo.multiply %42, %48 : tensor<8x50xf32>
  %50 = stablehlo.dot_general %49, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<50x16xf32>) -> tensor<8x16xf32>
  %cst_14 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %51 = stablehlo.broadcast_in_dim %cst_14, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %52 = stablehlo.multiply %51, %50 : tensor<8x16xf32>
  %cst_15 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %53 = stablehlo.broadcast_in_dim %cst_15, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %54 = stablehlo.multiply %arg0, %53 : tensor<8x16xf32>
  %55 = stablehlo.dot_general %49, %54, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<8x16xf32>) -> tensor<50x16xf32>
  return %52, %55 : tensor<8x16xf32>, tensor<50x16xf32>
}
func.func private @_where(%arg0: tensor<8x50xi1>, %arg1: tensor<8x50xf32>, %arg2: tensor<f32>) -> tensor<8x50xf32> {
  %0 = stablehlo.convert %arg2 : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %0, dims = [] : (tensor<f32>) -> tensor<8x50xf32>
  %2 = stablehlo.select %arg0, %arg1, %1 : tensor<8x50xi1>, tensor<8x50xf32>
  return %2 : tensor<8x50xf32>
}
