#include "cfuzzer.h"

// libFuzzer's entry for programs with their own main (SwiftPM gives every executable one). Weak, so builds without
// the fuzzer runtime link and see it as null.
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size))
    __attribute__((weak));

int ocr_fuzz_run(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size)) {
    if (!LLVMFuzzerRunDriver) return -1;
    return LLVMFuzzerRunDriver(argc, argv, callback);
}
