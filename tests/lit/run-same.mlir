// gshard-run on two modules that print the same (what gshard-opt leaves when its
// passes rewrote nothing): a warning on stderr; the results agree, exit 0.
// RUN: gshard-opt %s -o %t.mlir
// RUN: gshard-run %s %t.mlir 2>&1 | FileCheck %s
// RUN: gshard-opt %s --pass-pipeline=cse -o %t.changed.mlir
// RUN: gshard-run %s %t.changed.mlir 2>&1 | FileCheck %s --check-prefix=CHANGED

// CHECK: gshard-run: warning: {{.*}}run-same.mlir and {{.*}}.mlir are the same program
// CHECK: gshard-run: all 1 results agree

// CHANGED-NOT: warning
// CHANGED:     gshard-run: all 1 results agree

func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %c = stablehlo.constant dense<1.0> : tensor<4xf32>
  %0 = stablehlo.multiply %x, %c : tensor<4xf32>
  %1 = stablehlo.multiply %x, %c : tensor<4xf32>
  %2 = stablehlo.add %0, %1 : tensor<4xf32>
  return %2 : tensor<4xf32>
}
