// Everything lives in include/ckvm.h as static inline functions; SwiftPM needs one source file.
#include "ckvm.h"
