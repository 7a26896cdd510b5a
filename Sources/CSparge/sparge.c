// CSparge has no code: it carries sparge.h, the C interface that the SpargeC target implements in Swift
// (`@_cdecl`), so that Swift reads the header's structs with C's layout. SwiftPM needs one source file.
#include "sparge.h"
