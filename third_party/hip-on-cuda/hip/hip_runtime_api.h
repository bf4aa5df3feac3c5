// hip-on-cuda: everything is in hip_runtime.h (the host API cannot be split from it here).
#pragma once

#include <hip/hip_runtime.h>
