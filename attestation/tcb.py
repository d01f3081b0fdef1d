"""TCB level matching and status convergence, as Intel's Quote Verification Library does it.

Given verified collateral and the SVNs a platform reported, this module answers "which TCB
level applies, so which status and which advisories": the platform level from the PCK
certificate's SGX component SVNs and PCESVN plus the TD report's TEE_TCB_SVN; the TDX module
level from its ``tdxModuleIdentities`` entry; the QE level from its ISVSVN; and how those
statuses converge into one. The rules follow Intel's QVL (``TcbLevelCheck.cpp``,
``TdxModuleCheck.cpp``, ``EnclaveReportVerifier.cpp``; Intel PCS API v4 "TCB Info"):

- Levels are tried in the order Intel publishes them (newest first); the first level whose
  every SGX component SVN and PCESVN the PCK certificate reaches is the SGX level; the first
  such level whose TDX component SVNs the TD report's TEE_TCB_SVN also reaches is the
  platform (TDX) level. When TEE_TCB_SVN[1] (the module major version) is non-zero, entries
  0 and 1 (module SVN and version) are left out of the comparison: the module identity's own
  levels judge them instead.
- The TDX module identity is ``"TDX_" + hex(TEE_TCB_SVN[1])``; its first level with
  ISVSVN <= TEE_TCB_SVN[0] gives the module status.
- The QE identity's first level with ISVSVN <= the QE report's ISVSVN gives the QE status.
- Convergence: a worse QE or module status overrides the platform's; OutOfDate on either
  side combined with a ConfigurationNeeded-type platform status becomes
  OutOfDateConfigurationNeeded; Revoked anywhere is Revoked. Advisory IDs are united in
  order of first appearance.

Deliberately not here: signatures, certificates and collateral parsing, and the TDX 1.5
"TD relaunch advised" refinement (our statuses have no name for it; the underlying OutOfDate
status is reported instead, which is the more cautious reading).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from attestation.collateral import ModuleTcbLevel, TcbInfo, TcbLevel, TdxModuleIdentity
from attestation.report import TcbStatus

# TEE_TCB_SVN layout (Intel TDX Module ABI, TEE_TCB_INFO): byte 0 is the TDX module SVN (minor),
# byte 1 the module major version; the remaining bytes are compared as platform components.
TEE_TCB_SVN_MODULE_SVN = 0
TEE_TCB_SVN_MODULE_VERSION = 1
TDX_MODULE_IDENTITY_PREFIX = "TDX_"

_CONFIG_NEEDED = frozenset(
    {TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED}
)


def sgx_level_matches(level: TcbLevel, cpu_svn: Sequence[int], pce_svn: int) -> bool:
    """Every SGX component SVN and the PCESVN of the PCK certificate reach ``level``'s."""
    if pce_svn < level.pce_svn or len(cpu_svn) != len(level.sgx_components):
        return False
    return all(have >= need for have, need in zip(cpu_svn, level.sgx_components, strict=True))


def tdx_level_matches(level: TcbLevel, tee_tcb_svn: bytes) -> bool:
    """TEE_TCB_SVN reaches ``level``'s TDX components (module bytes skipped for TDX 1.5 style)."""
    if len(tee_tcb_svn) != len(level.tdx_components):
        return False
    start = 2 if tee_tcb_svn[TEE_TCB_SVN_MODULE_VERSION] > 0 else 0
    return all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, len(tee_tcb_svn)))


def match_platform_levels(
    levels: Iterable[TcbLevel], *, cpu_svn: Sequence[int], pce_svn: int, tee_tcb_svn: bytes
) -> tuple[TcbLevel | None, TcbLevel | None]:
    """(SGX level, TDX level): the first level matching the SGX part, and the first matching
    both. Either is None when no level matches ("TCB not supported")."""
    sgx_level: TcbLevel | None = None
    for level in levels:
        if not sgx_level_matches(level, cpu_svn, pce_svn):
            continue
        if sgx_level is None:
            sgx_level = level
        if tdx_level_matches(level, tee_tcb_svn):
            return sgx_level, level
    return sgx_level, None


def module_identity_id(module_version: int) -> str:
    """The ``tdxModuleIdentities`` id for a module major version: 1 -> ``TDX_01``."""
    return f"{TDX_MODULE_IDENTITY_PREFIX}{module_version:02X}"


def find_module_identity(tcb_info: TcbInfo, module_version: int) -> TdxModuleIdentity | None:
    wanted = module_identity_id(module_version)
    for identity in tcb_info.tdx_module_identities:
        if identity.id.upper() == wanted:
            return identity
    return None


def match_isv_level(levels: Iterable[ModuleTcbLevel], isv_svn: int) -> ModuleTcbLevel | None:
    """The first (newest) level whose ISVSVN ``isv_svn`` reaches; None if it reaches none."""
    for level in levels:
        if isv_svn >= level.isv_svn:
            return level
    return None


def converge(platform: TcbStatus, other: TcbStatus) -> TcbStatus:
    """Combine the platform status with a QE or TDX module status (Intel QVL convergence).

    Intel publishes only UpToDate, OutOfDate and Revoked for QE and module levels; any other
    status there is read as OutOfDate (as Intel's enclave report check does), never as better.
    """
    if other is TcbStatus.REVOKED or platform is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    if other is TcbStatus.UP_TO_DATE:
        return platform
    if platform in _CONFIG_NEEDED or platform is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED:
        return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return TcbStatus.OUT_OF_DATE


def unite_advisories(*groups: Iterable[str]) -> tuple[str, ...]:
    """All advisory IDs, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for group in groups:
        for advisory in group:
            seen.setdefault(advisory, None)
    return tuple(seen)
