// Bad pipelines: reported before the input is read (exit status 2).
// RUN: not gshard-opt %s --pass-pipeline='builtin.module(gshard-nope)' 2>&1 | FileCheck %s --check-prefix=UNKNOWN-PASS
// RUN: not gshard-opt %s --pass-pipeline='gshard-chunk-softmax{vocab-size=16}' 2>&1 | FileCheck %s --check-prefix=UNKNOWN-OPTION
// RUN: not gshard-opt %s --pass-pipeline='gshard-chunk-softmax{vocab-chunk=lots}' 2>&1 | FileCheck %s --check-prefix=BAD-VALUE
// RUN: not gshard-opt %s --pass-pipeline='gshard-inline{verbose}' 2>&1 | FileCheck %s --check-prefix=NO-VALUE
// RUN: not gshard-opt %s.missing --pass-pipeline=gshard-inline 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: not gshard-opt %s --no-such-flag 2>&1 | FileCheck %s --check-prefix=USAGE

// UNKNOWN-PASS: gshard-opt: error: bad pass pipeline: unknown pass 'gshard-nope'
// UNKNOWN-PASS-SAME: gshard passes: {{.*}}gshard-inline
// UNKNOWN-OPTION: gshard-opt: error: bad pass pipeline: pass 'gshard-chunk-softmax' has no option 'vocab-size' (options: {{.*}}vocab-chunk
// BAD-VALUE: gshard-opt: error: bad pass pipeline: pass 'gshard-chunk-softmax': option 'vocab-chunk' expects int, got 'lots'
// NO-VALUE: gshard-opt: error: bad pass pipeline: pass 'gshard-inline': option 'verbose' needs a value (key=value)
// MISSING: gshard-opt: error: cannot read '{{.*}}errors.mlir.missing': No such file or directory
// USAGE: gshard-opt: error: unrecognized arguments: --no-such-flag

// Contract violations: each pass refuses a composite it does not understand,
// naming the op and where it is (exit status 1); a piece that does not parse
// is an input error (exit status 2). Pieces are independent, so every error
// of the file is reported. The decompositions here are stubs: only the
// composites' operands, results and attributes matter.
// RUN: not gshard-opt %s --split-input-file --pass-pipeline=gshard-inline 2>&1 | FileCheck %s
// RUN: not gshard-opt %s --split-input-file --pass-pipeline='gshard-chunk-softmax{vocab-chunk=16}' 2>&1 | FileCheck %s

// CHECK: pass 'gshard-{{inline|chunk-softmax}}' failed: gshard.shared_embedding_softmax has version 7; this build of the passes understands versions 1, 2
// CHECK-NEXT: at loc("{{.*}}errors.mlir":{{[0-9]+}}:{{[0-9]+}}):
// CHECK-NEXT: stablehlo.composite "gshard.shared_embedding_softmax" {{.*}} version = 7 : i32}
func.func @unknown_version(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi32>) -> tensor<8xf32> {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %ids {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @decomposition, version = 7 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0 : tensor<8xf32>
}
func.func private @decomposition(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %f = stablehlo.constant dense<0.0> : tensor<8xf32>
  %i = stablehlo.constant dense<0> : tensor<8xi32>
  return %f, %i, %f, %f : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// Class ids must be i32.
// CHECK: pass 'gshard-{{inline|chunk-softmax}}' failed: gshard.shared_embedding_softmax: labels must be i32[8] ids or float [8, 50] probabilities
// CHECK-NEXT: at loc("{{.*}}errors.mlir":{{[0-9]+}}:{{[0-9]+}}):
// CHECK-NEXT: stablehlo.composite {{.*}} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi64>)
func.func @i64_ids(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi64>) -> tensor<8xf32> {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %ids {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @decomposition, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi64>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0 : tensor<8xf32>
}
func.func private @decomposition(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi64>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %f = stablehlo.constant dense<0.0> : tensor<8xf32>
  %i = stablehlo.constant dense<0> : tensor<8xi32>
  return %f, %i, %f, %f : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// The embedding's feature dimension must match x's.
// CHECK: pass 'gshard-{{inline|chunk-softmax}}' failed: gshard.shared_embedding_softmax: embedding must be a float [V, 16] tensor
func.func @mismatched_features(%x: tensor<8x16xf32>, %e: tensor<50x12xf32>, %ids: tensor<8xi32>) -> tensor<8xf32> {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %ids {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @decomposition, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x12xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0 : tensor<8xf32>
}
func.func private @decomposition(%x: tensor<8x16xf32>, %e: tensor<50x12xf32>, %ids: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %f = stablehlo.constant dense<0.0> : tensor<8xf32>
  %i = stablehlo.constant dense<0> : tensor<8xi32>
  return %f, %i, %f, %f : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// The gradient's saved logsumexp must be f32[N].
// CHECK: pass 'gshard-{{inline|chunk-softmax}}' failed: gshard.shared_embedding_softmax_grad: logsumexp must be tensor<8xf32>
func.func @bf16_logsumexp(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi32>, %lse: tensor<8xbf16>, %g: tensor<8xf32>) -> tensor<50x16xf32> {
  %0:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %x, %e, %ids, %lse, %g, %g, %g {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @decomposition, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>, tensor<8xbf16>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
  return %0#1 : tensor<50x16xf32>
}
func.func private @decomposition(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi32>, %lse: tensor<8xbf16>, %g0: tensor<8xf32>, %g1: tensor<8xf32>, %g2: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>) {
  return %x, %e : tensor<8x16xf32>, tensor<50x16xf32>
}

// -----

// Input that does not parse: the error points into this file.
// CHECK: gshard-opt: error: cannot parse {{.*}}errors.mlir
// CHECK-NEXT: errors.mlir:{{[0-9]+}}:{{[0-9]+}}: error: use of value '%x' expects different type than prior uses: 'tensor<8x16xf64>' vs 'tensor<8x16xf32>'
// CHECK-NEXT: errors.mlir:{{[0-9]+}}:{{[0-9]+}}: note: prior use here
func.func @does_not_parse(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
  %0 = stablehlo.add %x, %x : tensor<8x16xf64>
  return %0 : tensor<8x16xf32>
}
