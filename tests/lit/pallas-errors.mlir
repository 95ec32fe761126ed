// RUN: not gshard-opt %s --pass-pipeline='gshard-pallas{platform=rocm}' 2>&1 | FileCheck %s --check-prefix=PLATFORM
// RUN: not gshard-opt %s --pass-pipeline='gshard-pallas{platform=cuda block-tokens=24}' 2>&1 | FileCheck %s --check-prefix=BLOCK
// RUN: not gshard-opt %s --pass-pipeline='gshard-pallas{block-vocab=many}' 2>&1 | FileCheck %s --check-prefix=VALUE

// Bad options of gshard-pallas are pipeline errors (exit status 2), reported
// before the input is read.
// PLATFORM: gshard-opt: error: bad pass pipeline: {{.*}}platform must be one of interpret, cuda, tpu, got 'rocm'
// BLOCK: gshard-opt: error: bad pass pipeline: {{.*}}block-tokens must be 0 or a power of two >= 16 for platform=cuda, got 24
// VALUE: gshard-opt: error: bad pass pipeline: pass 'gshard-pallas': option 'block-vocab' expects int, got 'many'

func.func @empty() {
  return
}
