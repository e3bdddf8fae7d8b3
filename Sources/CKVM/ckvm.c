#include "ckvm.h"
