/* libnghttp2 for Swift. Expression macros do not import, so the ones the gRPC layer needs are
 * re-exported here as constants. Debian 12 ships nghttp2 1.52: the ssize_t API only. */
#ifndef C_NGHTTP2_SHIM_H
#define C_NGHTTP2_SHIM_H
#include <nghttp2/nghttp2.h>

static const int32_t CNGHTTP2_DEFAULT_WINDOW_SIZE = NGHTTP2_INITIAL_WINDOW_SIZE;
#endif
