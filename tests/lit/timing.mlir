// --mlir-timing: wall time of parsing, of each pass and of printing, reported
// on stderr at the end as mlir-opt reports it; --split-input-file adds up the
// pieces' times per pipeline position.
// RUN: gshard-opt %s --pass-pipeline='gshard-inline,canonicalize,cse' --mlir-timing -o %t 2>&1 | FileCheck %s
// RUN: gshard-opt %s --split-input-file --pass-pipeline='gshard-inline,cse' --mlir-timing -o %t 2>&1 | FileCheck %s --check-prefix=SPLIT
// RUN: gshard-opt %s --pass-pipeline='gshard-inline,canonicalize' --no-verify-each --mlir-timing -o %t 2>&1 | FileCheck %s --check-prefix=NOVERIFY

// CHECK:      ===-------------------------------------------------------------------------===
// CHECK-NEXT:                          ... Execution time report ...
// CHECK-NEXT: ===-------------------------------------------------------------------------===
// CHECK-NEXT:   Total Execution Time: {{[0-9]+\.[0-9][0-9][0-9][0-9]}} seconds
// CHECK-EMPTY:
// CHECK-NEXT:   ----Wall Time----  ----Name----
// CHECK-NEXT:     {{[0-9]+\.[0-9][0-9][0-9][0-9]}} ({{ *[0-9]+\.[0-9]}}%)  Parser
// CHECK-NEXT:     {{[0-9]+\.[0-9][0-9][0-9][0-9]}} ({{ *[0-9]+\.[0-9]}}%)  gshard-inline
// CHECK-NEXT:     {{[0-9]+\.[0-9][0-9][0-9][0-9]}} ({{ *[0-9]+\.[0-9]}}%)  canonicalize
// CHECK-NEXT:     {{[0-9]+\.[0-9][0-9][0-9][0-9]}} ({{ *[0-9]+\.[0-9]}}%)  cse
// CHECK-NEXT:     {{[0-9]+\.[0-9][0-9][0-9][0-9]}} ({{ *[0-9]+\.[0-9]}}%)  Output
// CHECK-NEXT:     {{[0-9]+\.[0-9][0-9][0-9][0-9]}} (100.0%)  Total
// CHECK-NOT:  Execution time report

// SPLIT:      ----Wall Time----  ----Name----
// SPLIT-NEXT:   Parser
// SPLIT-NEXT:   gshard-inline
// SPLIT-NEXT:   cse
// SPLIT-NEXT:   Output
// SPLIT-NEXT:   Total

// NOVERIFY:      gshard-inline
// NOVERIFY-NEXT: canonicalize
func.func @f(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi32>) -> tensor<8xf32> {
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %ids {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @decomposition, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  return %0#0 : tensor<8xf32>
}
func.func private @decomposition(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %f = stablehlo.constant dense<0.0> : tensor<8xf32>
  %i = stablehlo.constant dense<0> : tensor<8xi32>
  return %f, %i, %f, %f : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @unused() {
  return
}

// -----

func.func @g(%x: tensor<f32>) -> tensor<f32> {
  return %x : tensor<f32>
}
