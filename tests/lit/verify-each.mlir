// The verifier runs after each pass by default and names the pass that broke
// the module; --no-verify-each skips it between passes and verifies once at the
// end; --mlir-print-ir-after-failure shows what the failing pass left; a bug in
// a pass shows its full traceback with --show-traceback or GSHARD_DEBUG set.
// The misbehaving passes come from tests/plugins/debugging.py.
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/debugging.py --pass-pipeline='test-break-dominance,cse' 2>&1 | FileCheck %s --check-prefix=EACH
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/debugging.py --pass-pipeline='test-break-dominance,cse' --no-verify-each --mlir-print-ir-after=cse 2>&1 | FileCheck %s --check-prefix=END
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/debugging.py --pass-pipeline='cse,test-break-dominance' --mlir-print-ir-after-failure 2>&1 | FileCheck %s --check-prefix=FAILURE
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/debugging.py --pass-pipeline='test-crash' 2>&1 | FileCheck %s --check-prefix=SHORT
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/debugging.py --pass-pipeline='test-crash' --show-traceback 2>&1 | FileCheck %s --check-prefix=TRACEBACK
// RUN: env GSHARD_DEBUG=1 not gshard-opt %s --load-pass-plugin=%S/../plugins/debugging.py --pass-pipeline='test-crash' 2>&1 | FileCheck %s --check-prefix=TRACEBACK

// EACH: pass 'test-break-dominance' left IR that does not verify
// EACH: operand #0 does not dominate this use

// Without the verifier in between, cse runs on the broken module.
// END:      // -----// IR Dump After cse //----- //
// END:      the pipeline left IR that does not verify (the verifier did not run after each pass
// END:      operand #0 does not dominate this use

// FAILURE-NOT: IR Dump After cse
// FAILURE:     // -----// IR Dump After test-break-dominance Failed //----- //
// FAILURE:     stablehlo.sine
// FAILURE:     pass 'test-break-dominance' left IR that does not verify

// SHORT-NOT: Traceback
// SHORT:     pass 'test-crash' raised ZeroDivisionError: division by zero
// SHORT-NOT: Traceback

// TRACEBACK:      Traceback (most recent call last):
// TRACEBACK:        File "{{.*}}debugging.py", line {{[0-9]+}}, in run
// TRACEBACK:        File "{{.*}}debugging.py", line {{[0-9]+}}, in _divide
// TRACEBACK:      ZeroDivisionError: division by zero
// TRACEBACK-NEXT: pass 'test-crash' raised ZeroDivisionError: division by zero

func.func @sine(%x: tensor<4xf32>) -> tensor<4xf32> {
  %c = stablehlo.constant dense<2.0> : tensor<4xf32>
  %y = stablehlo.multiply %x, %c : tensor<4xf32>
  %s = stablehlo.sine %y : tensor<4xf32>
  return %s : tensor<4xf32>
}
