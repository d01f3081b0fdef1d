"""Linux TDX guest kernel interfaces: ioctl numbers, struct layouts, sysfs paths. Data only.

Sources, each cited where used:
- [UAPI] include/uapi/linux/tdx-guest.h (mainline): ``struct tdx_report_req`` and
  ``TDX_CMD_GET_REPORT0``.
- [DCAP] Intel SGX/TDX DCAP ``QuoteGeneration/quote_wrapper/tdx_attest/tdx_attest.c``: the
  out-of-tree ``TDX_CMD_EXTEND_RTMR`` and ``TDX_CMD_GET_QUOTE`` ioctls (default, non-"V3_DRIVER"
  numbering), ``struct tdx_quote_hdr``, ``struct tdx_quote_req``, the GetQuote status codes and
  the 4-byte big-endian length prefix around the QGS message.
- [QGS] Intel DCAP ``qgs_msg_lib``: the GET_QUOTE_REQ / GET_QUOTE_RESP messages (little-endian).
- [TDX-ABI] Intel TDX Module ABI specification: TDREPORT_STRUCT = REPORTMACSTRUCT (256 bytes,
  REPORTDATA at offset 128) || TEE_TCB_INFO (239) || reserved (17) || TDINFO_STRUCT (at 512;
  RTMR0..3 at 208..400 within it).
- [SYSFS] Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest (Linux 6.16): RTMRs as
  ``measurements/rtmrN:sha384``; reading gives the 48-byte value, writing 48 bytes extends.
- [TSM] Documentation/ABI/testing/configfs-tsm-report (Linux 6.7): ``report/$name/{provider,
  generation,inblob,outblob}``; ``generation`` counts writes to inblob and options.
"""

from __future__ import annotations

from typing import Final


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    # asm-generic/ioctl.h: dir(2 bits) << 30 | size(14) << 16 | type(8) << 8 | nr(8)
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | number


_IOC_WRITE: Final = 1
_IOC_READ: Final = 2

DEFAULT_DEVICE_PATH: Final = "/dev/tdx_guest"  # misc device named after the module, tdx_guest
DEFAULT_MEASUREMENTS_DIR: Final = "/sys/class/misc/tdx_guest/measurements"  # [SYSFS]
DEFAULT_CONFIGFS_TSM_ROOT: Final = "/sys/kernel/config/tsm"  # [TSM]
CONFIGFS_TDX_PROVIDER: Final = "tdx_guest"  # [TSM] provider attribute for Intel TDX

# [UAPI] struct tdx_report_req { u8 reportdata[64]; u8 tdreport[1024]; }
TDX_REPORTDATA_LEN: Final = 64
TDX_REPORT_LEN: Final = 1024
TDX_CMD_GET_REPORT0: Final = _ioc(
    _IOC_READ | _IOC_WRITE, "T", 1, TDX_REPORTDATA_LEN + TDX_REPORT_LEN
)

# [DCAP] struct tdx_extend_rtmr_req { u8 data[48]; u8 index; } with _IOR('T', 3, ...)
TDX_EXTEND_RTMR_DATA_LEN: Final = 48
TDX_CMD_EXTEND_RTMR: Final = _ioc(_IOC_READ, "T", 3, TDX_EXTEND_RTMR_DATA_LEN + 1)

# [DCAP] struct tdx_quote_req { u64 buf; u64 len; } with _IOR('T', 4, ...)
TDX_CMD_GET_QUOTE: Final = _ioc(_IOC_READ, "T", 4, 16)
# [DCAP] struct tdx_quote_hdr { u64 version; u64 status; u32 in_len; u32 out_len; data[] }
QUOTE_HDR_FORMAT: Final = "<QQII"
QUOTE_HDR_SIZE: Final = 24
QUOTE_HDR_VERSION: Final = 1
QUOTE_REQ_BUF_SIZE: Final = 4 * 4 * 1024  # [DCAP] REQ_BUF_SIZE, four pages
QGS_LENGTH_PREFIX_SIZE: Final = 4  # [DCAP] HEADER_SIZE: big-endian length of the QGS message

# [DCAP] GetQuote status codes, written by the VMM into tdx_quote_hdr.status
GET_QUOTE_SUCCESS: Final = 0
GET_QUOTE_IN_FLIGHT: Final = 0xFFFFFFFFFFFFFFFF
GET_QUOTE_ERROR: Final = 0x8000000000000000
GET_QUOTE_SERVICE_UNAVAILABLE: Final = 0x8000000000000001

# [QGS] message header { u16 major; u16 minor; u32 type; u32 size; u32 error_code }
QGS_MSG_HEADER_FORMAT: Final = "<HHIII"
QGS_MSG_HEADER_SIZE: Final = 16
QGS_MSG_MAJOR_VERSION: Final = 1
QGS_MSG_MINOR_VERSION: Final = 0
QGS_MSG_GET_QUOTE_REQ: Final = 0
QGS_MSG_GET_QUOTE_RESP: Final = 1
# GET_QUOTE_REQ body { u32 report_size; u32 id_list_size; report; id_list }
# GET_QUOTE_RESP body { u32 selected_id_size; u32 quote_size; selected_id; quote }
QGS_BODY_SIZES_FORMAT: Final = "<II"
QGS_BODY_SIZES_SIZE: Final = 8

# [TDX-ABI] offsets inside the 1024-byte TDREPORT
TDREPORT_REPORTDATA: Final = (128, 64)
TDREPORT_RTMR_OFFSET: Final = 512 + 208  # TDINFO_STRUCT starts at 512; RTMR0 at 208 within it
TDREPORT_RTMR_SIZE: Final = 48
