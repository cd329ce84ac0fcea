/* libhiredis 0.14 (apt libhiredis-dev). No pkgConfig on the target on purpose: hiredis.pc adds
 * -D_FILE_OFFSET_BITS=64, which SwiftPM warns about on every build. */
#ifndef C_HIREDIS_SHIM_H
#define C_HIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#endif
