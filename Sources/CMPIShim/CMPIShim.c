// Everything lives in the header; this file exists so that the target has a source.
#include "CMPIShim.h"
