// The IR between passes, as mlir-opt prints it: on stderr, each dump headed by
// the pass it follows or precedes; stdout (here -o) keeps only the result.
// RUN: gshard-opt %s --pass-pipeline='gshard-inline,symbol-dce' --mlir-print-ir-before-all --mlir-print-ir-after-all -o %t 2>&1 | FileCheck %s --check-prefix=ALL
// RUN: FileCheck %s --check-prefix=OUT --input-file %t
// RUN: gshard-opt %s --pass-pipeline='gshard-inline,symbol-dce' --mlir-print-ir-after=gshard-inline -o %t 2>&1 | FileCheck %s --check-prefix=AFTER
// RUN: gshard-opt %s --pass-pipeline='gshard-inline,symbol-dce' --mlir-print-ir-before=symbol-dce,gshard-inline -o %t 2>&1 | FileCheck %s --check-prefix=BEFORE
// RUN: gshard-opt %s --pass-pipeline='gshard-inline' --mlir-print-ir-after-all --mlir-print-debuginfo -o %t 2>&1 | FileCheck %s --check-prefix=DEBUGINFO
// RUN: gshard-opt %s --pass-pipeline='gshard-inline,cse,symbol-dce' --mlir-print-ir-after-all --mlir-print-ir-after-change -o %t 2>&1 | FileCheck %s --check-prefix=CHANGE

// ALL:      // -----// IR Dump Before gshard-inline //----- //
// ALL-NEXT: module {
// ALL:        stablehlo.composite "gshard.shared_embedding_softmax"
// ALL:      // -----// IR Dump After gshard-inline //----- //
// ALL-NEXT: module {
// ALL-NOT:    stablehlo.composite
// ALL:        call @decomposition(
// ALL:        func.func private @unused()
// ALL:      // -----// IR Dump Before symbol-dce //----- //
// ALL:        func.func private @unused()
// ALL:      // -----// IR Dump After symbol-dce //----- //
// ALL-NOT:    @unused
// ALL-NOT:  IR Dump

// OUT-NOT:  IR Dump
// OUT:      module {
// OUT:        call @decomposition(
// OUT-NOT:    @unused

// AFTER-NOT: IR Dump Before
// AFTER:     // -----// IR Dump After gshard-inline //----- //
// AFTER-NOT: IR Dump

// BEFORE-NOT: IR Dump After
// BEFORE:     // -----// IR Dump Before gshard-inline //----- //
// BEFORE:     // -----// IR Dump Before symbol-dce //----- //
// BEFORE-NOT: IR Dump

// cse finds nothing to merge here: no dump after it.
// CHANGE:     // -----// IR Dump After gshard-inline //----- //
// CHANGE-NOT: IR Dump After cse
// CHANGE:     // -----// IR Dump After symbol-dce //----- //

// Locations in the dumps name this file, as in the output.
// DEBUGINFO: // -----// IR Dump After gshard-inline //----- //
// DEBUGINFO: loc("{{.*}}print-ir.mlir":{{[0-9]+}}:{{[0-9]+}})
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
