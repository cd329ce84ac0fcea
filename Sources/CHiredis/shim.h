/* libhiredis 0.14 (apt libhiredis-dev). No pkgConfig on the target on purpose: hiredis.pc adds
 * -D_FILE_OFFSET_BITS=64, which SwiftPM warns about on every build. */
#ifndef C_HIREDIS_SHIM_H
#define C_HIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

/* RedisClient's context lifetime relies on 0.14's order of teardown (reply callbacks with NULL,
 * then the cleanup hook); hiredis 1.x calls cleanup first. Fail the build rather than the process. */
#if HIREDIS_MAJOR != 0
#error "RedisClient is written for hiredis 0.14 (Debian 12's libhiredis-dev)"
#endif
#endif
