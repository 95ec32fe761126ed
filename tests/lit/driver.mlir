// The driver itself: input from a file or stdin, output to stdout or -o,
// printing with and without locations, MLIR passes mixed with gshard passes.
// RUN: gshard-opt %s | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: gshard-opt - < %s -o %t
// RUN: FileCheck %s --check-prefix=ROUNDTRIP --input-file %t
// RUN: gshard-opt %s --mlir-print-debuginfo | FileCheck %s --check-prefix=DEBUGINFO
// RUN: gshard-opt %s --pass-pipeline='builtin.module(canonicalize,gshard-inline,cse,symbol-dce)' | FileCheck %s --check-prefix=MIXED

// ROUNDTRIP-LABEL: func.func @twice(
// ROUNDTRIP-NEXT:    %[[C:.+]] = stablehlo.constant dense<2.000000e+00> : tensor<f32>
// ROUNDTRIP-NEXT:    %[[A:.+]] = stablehlo.multiply %arg0, %[[C]] : tensor<f32>
// ROUNDTRIP-NEXT:    %[[B:.+]] = stablehlo.multiply %arg0, %[[C]] : tensor<f32>
// ROUNDTRIP-NEXT:    %[[S:.+]] = stablehlo.add %[[A]], %[[B]] : tensor<f32>
// ROUNDTRIP-NEXT:    return %[[S]] : tensor<f32>
// ROUNDTRIP-NOT:   loc(

// Locations name this file.
// DEBUGINFO: stablehlo.multiply %arg0, %{{.+}} : tensor<f32> loc([[LOC:#loc[0-9]+]])
// DEBUGINFO: [[LOC]] = loc("{{.*}}driver.mlir":{{[0-9]+}}:{{[0-9]+}})

// cse merges the two multiplies; a module without composites is fine for gshard-inline.
// MIXED-LABEL: func.func @twice(
// MIXED:         stablehlo.multiply
// MIXED-NOT:     stablehlo.multiply
// MIXED:         return
func.func @twice(%x: tensor<f32>) -> tensor<f32> {
  %c = stablehlo.constant dense<2.0> : tensor<f32>
  %a = stablehlo.multiply %x, %c : tensor<f32>
  %b = stablehlo.multiply %x, %c : tensor<f32>
  %s = stablehlo.add %a, %b : tensor<f32>
  return %s : tensor<f32>
}
