/*
 * Where struct sip_msg's fields sit in each supported OpenSIPS version (x86_64, default build
 * flags). Values measured from real builds (see ../shared/opensips-abi/).
 * 3.6 and 4.0 differ in struct receive_info, which sits before `buf`.
 */
#ifndef SSO_SIP_MSG_LAYOUT_H
#define SSO_SIP_MSG_LAYOUT_H

#if SSO_ABI == 304
#define SSO_MSG_CALLID_OFFSET 128
#define SSO_MSG_UNPARSED_OFFSET 472
#define SSO_MSG_RCV_OFFSET 480
#define SSO_MSG_BUF_OFFSET 584
#define SSO_MSG_MSG_FLAGS_OFFSET 2408
#define SSO_MSG_SIZE 2472
#elif SSO_ABI == 306
#define SSO_MSG_CALLID_OFFSET 120
#define SSO_MSG_UNPARSED_OFFSET 496
#define SSO_MSG_RCV_OFFSET 504
#define SSO_MSG_BUF_OFFSET 608
#define SSO_MSG_MSG_FLAGS_OFFSET 2432
#define SSO_MSG_SIZE 2496
#elif SSO_ABI == 400
#define SSO_MSG_CALLID_OFFSET 120
#define SSO_MSG_UNPARSED_OFFSET 496
#define SSO_MSG_RCV_OFFSET 504
#define SSO_MSG_BUF_OFFSET 672
#define SSO_MSG_MSG_FLAGS_OFFSET 2496
#define SSO_MSG_SIZE 2560
#else
#error "unsupported SSO_ABI"
#endif

#endif
