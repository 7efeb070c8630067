// What the CUDA tests share (compiled only with ATP_CUDA).
#pragma once
#include <gtest/gtest.h>

#include "cuda/backend.h"

// Skips the test, saying why, on a machine without a usable GPU.
#define ATP_SKIP_WITHOUT_GPU()                                                    \
  do {                                                                            \
    const ::atp::Status gpu = ::atp::CudaDeviceStatus();                          \
    if (!gpu.ok()) GTEST_SKIP() << "no CUDA GPU here (" << gpu.ToString() << ")"; \
  } while (0)
