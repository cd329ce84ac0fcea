/* libnghttp2 for Swift (apt libnghttp2-dev). Debian 12 ships nghttp2 1.52: the ssize_t API only
 * (no *_mem_send2, no nghttp2_data_provider2). */
#ifndef C_NGHTTP2_SHIM_H
#define C_NGHTTP2_SHIM_H
#include <nghttp2/nghttp2.h>
#endif
