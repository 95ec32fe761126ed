// RUN: gshard-opt --list-passes | FileCheck %s

// Every registered gshard pass, sorted, with its summary and its options as
// `name=default  (type)`; this file holds no IR.

// CHECK-LABEL: gshard passes:
// CHECK:         gshard-chunk-softmax  {{.+}}
// CHECK-NEXT:        vocab-chunk={{[0-9]+}}  (int)
// CHECK-NEXT:        token-chunk={{[0-9]+}}  (int)
// CHECK-NEXT:        memory-budget-mib={{[0-9.]+}}  (float)
// CHECK:         gshard-inline  Replace gshard composites by calls to their decomposition
// CHECK-NEXT:        (no options)
// CHECK:       Other pipeline names are looked up in MLIR's registry
