//! The guest operating system of an OVF: the `.vmx` `guestOS` key turned into vSphere's guest
//! id (`vmw:osType`) and a CIM operating system type (`ovf:id` of the OperatingSystemSection).
//!
//! This sits in the OVA output (`super::ova`): the OVF descriptor names the guest twice, once
//! for vSphere and once for every other importer. vSphere reads only `vmw:osType` and refuses
//! an id its `VirtualMachineGuestOsIdentifier` enumeration does not define; VirtualBox and
//! other DMTF tools read only `ovf:id`. Neither can be derived from the `.vmx` key by rewriting
//! it (`ubuntu-64` is `ubuntu64Guest`, `other-64` is `otherGuest64`, `windows9srv-64` is
//! `windows9Server64Guest`), so both come from [`GUEST_OS`], one row per key.
//!
//! Sources:
//! - The `.vmx` keys and their vSphere ids are VMware's own mapping, the `GUEST_OS_KEY_MAP`
//!   table of open-vm-tools (`open-vm-tools/lib/include/guest_os_tables.h`, as of commit
//!   3e68aa8, October 2025): every key VMware products write or accept, aliases included.
//! - The vSphere ids are checked against the enumeration as pyvmomi 9.1.1.0 ships it,
//!   committed as `tests/data/vsphere-guest-ids.txt` (the test below). Every one of its 211
//!   ids is produced by at least one key.
//! - The CIM values are the DMTF `CIM_OperatingSystem.OSType` value map (DSP0004 CIM schema,
//!   `CIM_OperatingSystem.mof`; values 0 to 102 as in CIM 2.x, 103 to 110 added in CIM 2.25,
//!   111 to 115 later). Transcriptions of the value map agree up to 115 and disagree above it
//!   (Windows 8.1, 10 and Server 2016 have different numbers in different tools), so the table
//!   uses none above 115; see [`cim`].
//!
//! Rules for the CIM column, where the value map has no entry of its own for a guest:
//! - a Windows release newer than the value map names: the nearest older release it names
//!   with the same bitness and kind (Windows 10 and 11 64-bit are "Windows 8 64-bit", every
//!   Windows Server since 2016 is "Windows Server 2012 R2"), as VirtualBox's OVF export does
//!   for releases newer than its CIM table;
//! - a Linux distribution the value map does not name (Fedora, Photon, Rocky, the "other
//!   3.x+ kernel" kinds, ...): "LINUX" (36) or "Linux 64-Bit" (101);
//! - every macOS is "MACOS" (2) and every ESXi "VMware ESXi" (104): the map has one value each.
//!
//! Invariant: [`lookup`] never fails. A key not in the table (a newer VMware release, a typo,
//! an Arm guest such as `arm-ubuntu-64`, which vSphere's enumeration has no id for) gets
//! [`FALLBACK_64`] when it ends in `-64` and [`FALLBACK_32`] otherwise: vSphere accepts both,
//! and a 64-bit guest keeps a 64-bit type.

/// A `CIM_OperatingSystem.OSType` value: the `ovf:id` of an OVF OperatingSystemSection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CimOsType(pub u16);

/// The `CIM_OperatingSystem.OSType` values the table uses, named after the DMTF value map's
/// strings (quoted in each doc line).
pub(crate) mod cim {
    use super::CimOsType;

    /// "Other"
    pub const OTHER: CimOsType = CimOsType(1);
    /// "MACOS"
    pub const MACOS: CimOsType = CimOsType(2);
    /// "OS/2"
    pub const OS2: CimOsType = CimOsType(12);
    /// "MSDOS"
    pub const MSDOS: CimOsType = CimOsType(14);
    /// "WIN3x"
    pub const WIN3X: CimOsType = CimOsType(15);
    /// "WIN95"
    pub const WIN95: CimOsType = CimOsType(16);
    /// "WIN98"
    pub const WIN98: CimOsType = CimOsType(17);
    /// "WINNT"
    pub const WINNT: CimOsType = CimOsType(18);
    /// "NetWare"
    pub const NETWARE: CimOsType = CimOsType(21);
    /// "SCO UnixWare"
    pub const SCO_UNIXWARE: CimOsType = CimOsType(25);
    /// "SCO OpenServer"
    pub const SCO_OPENSERVER: CimOsType = CimOsType(26);
    /// "Solaris"
    pub const SOLARIS: CimOsType = CimOsType(29);
    /// "LINUX"
    pub const LINUX: CimOsType = CimOsType(36);
    /// "FreeBSD"
    pub const FREEBSD: CimOsType = CimOsType(42);
    /// "Windows 2000"
    pub const WINDOWS_2000: CimOsType = CimOsType(58);
    /// "Windows (R) Me"
    pub const WINDOWS_ME: CimOsType = CimOsType(63);
    /// "Windows XP"
    pub const WINDOWS_XP: CimOsType = CimOsType(67);
    /// "Microsoft Windows Server 2003"
    pub const WINDOWS_SERVER_2003: CimOsType = CimOsType(69);
    /// "Microsoft Windows Server 2003 64-Bit"
    pub const WINDOWS_SERVER_2003_64: CimOsType = CimOsType(70);
    /// "Windows XP 64-Bit"
    pub const WINDOWS_XP_64: CimOsType = CimOsType(71);
    /// "Windows Vista"
    pub const WINDOWS_VISTA: CimOsType = CimOsType(73);
    /// "Windows Vista 64-Bit"
    pub const WINDOWS_VISTA_64: CimOsType = CimOsType(74);
    /// "Microsoft Windows Server 2008"
    pub const WINDOWS_SERVER_2008: CimOsType = CimOsType(76);
    /// "Microsoft Windows Server 2008 64-Bit"
    pub const WINDOWS_SERVER_2008_64: CimOsType = CimOsType(77);
    /// "FreeBSD 64-Bit"
    pub const FREEBSD_64: CimOsType = CimOsType(78);
    /// "RedHat Enterprise Linux"
    pub const RHEL: CimOsType = CimOsType(79);
    /// "RedHat Enterprise Linux 64-Bit"
    pub const RHEL_64: CimOsType = CimOsType(80);
    /// "Solaris 64-Bit"
    pub const SOLARIS_64: CimOsType = CimOsType(81);
    /// "SUSE"
    pub const SUSE: CimOsType = CimOsType(82);
    /// "SUSE 64-Bit"
    pub const SUSE_64: CimOsType = CimOsType(83);
    /// "SLES"
    pub const SLES: CimOsType = CimOsType(84);
    /// "SLES 64-Bit"
    pub const SLES_64: CimOsType = CimOsType(85);
    /// "Novell OES"
    pub const NOVELL_OES: CimOsType = CimOsType(86);
    /// "Novell Linux Desktop"
    pub const NOVELL_LINUX_DESKTOP: CimOsType = CimOsType(87);
    /// "Sun Java Desktop System"
    pub const SUN_JAVA_DESKTOP_SYSTEM: CimOsType = CimOsType(88);
    /// "Mandriva"
    pub const MANDRIVA: CimOsType = CimOsType(89);
    /// "Mandriva 64-Bit"
    pub const MANDRIVA_64: CimOsType = CimOsType(90);
    /// "TurboLinux"
    pub const TURBOLINUX: CimOsType = CimOsType(91);
    /// "TurboLinux 64-Bit"
    pub const TURBOLINUX_64: CimOsType = CimOsType(92);
    /// "Ubuntu"
    pub const UBUNTU: CimOsType = CimOsType(93);
    /// "Ubuntu 64-Bit"
    pub const UBUNTU_64: CimOsType = CimOsType(94);
    /// "Debian"
    pub const DEBIAN: CimOsType = CimOsType(95);
    /// "Debian 64-Bit"
    pub const DEBIAN_64: CimOsType = CimOsType(96);
    /// "Linux 2.4.x"
    pub const LINUX_2_4: CimOsType = CimOsType(97);
    /// "Linux 2.4.x 64-Bit"
    pub const LINUX_2_4_64: CimOsType = CimOsType(98);
    /// "Linux 2.6.x"
    pub const LINUX_2_6: CimOsType = CimOsType(99);
    /// "Linux 2.6.x 64-Bit"
    pub const LINUX_2_6_64: CimOsType = CimOsType(100);
    /// "Linux 64-Bit"
    pub const LINUX_64: CimOsType = CimOsType(101);
    /// "Other 64-Bit"
    pub const OTHER_64: CimOsType = CimOsType(102);
    /// "Microsoft Windows Server 2008 R2"
    pub const WINDOWS_SERVER_2008_R2: CimOsType = CimOsType(103);
    /// "VMware ESXi"
    pub const VMWARE_ESXI: CimOsType = CimOsType(104);
    /// "Microsoft Windows 7"
    pub const WINDOWS_7: CimOsType = CimOsType(105);
    /// "CentOS 32-bit"
    pub const CENTOS: CimOsType = CimOsType(106);
    /// "CentOS 64-bit"
    pub const CENTOS_64: CimOsType = CimOsType(107);
    /// "Oracle Linux 32-bit"
    pub const ORACLE_LINUX: CimOsType = CimOsType(108);
    /// "Oracle Linux 64-bit"
    pub const ORACLE_LINUX_64: CimOsType = CimOsType(109);
    /// "eComStation 32-bitx"
    pub const ECOMSTATION: CimOsType = CimOsType(110);
    /// "Microsoft Windows Server 2012"
    pub const WINDOWS_SERVER_2012: CimOsType = CimOsType(112);
    /// "Microsoft Windows 8"
    pub const WINDOWS_8: CimOsType = CimOsType(113);
    /// "Microsoft Windows 8 64-bit"
    pub const WINDOWS_8_64: CimOsType = CimOsType(114);
    /// "Microsoft Windows Server 2012 R2"
    pub const WINDOWS_SERVER_2012_R2: CimOsType = CimOsType(115);
}

/// The guest as an OVF names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestOs {
    /// `vmw:osType`: a value of vSphere's `VirtualMachineGuestOsIdentifier` enumeration.
    pub vsphere_id: &'static str,
    /// `ovf:id`: a `CIM_OperatingSystem.OSType` value.
    pub cim: CimOsType,
}

/// What an unknown 32-bit (or unmarked) `guestOS` key becomes: vSphere's "Other (32-bit)".
pub(crate) const FALLBACK_32: GuestOs = GuestOs {
    vsphere_id: "otherGuest",
    cim: cim::OTHER,
};

/// What an unknown `guestOS` key ending in `-64` becomes: vSphere's "Other (64-bit)".
pub(crate) const FALLBACK_64: GuestOs = GuestOs {
    vsphere_id: "otherGuest64",
    cim: cim::OTHER_64,
};

/// One row of [`GUEST_OS`]: a `.vmx` `guestOS` key and its guest.
pub(crate) struct GuestOsEntry {
    /// The key as VMware's table spells it; matched ASCII-case-insensitively, because `.vmx`
    /// files spell keys in either case (`freebsd-64` for the table's `freeBSD-64`).
    pub vmx_key: &'static str,
    /// What the OVF says.
    pub guest: GuestOs,
}

const fn g(vmx_key: &'static str, vsphere_id: &'static str, cim: CimOsType) -> GuestOsEntry {
    GuestOsEntry {
        vmx_key,
        guest: GuestOs { vsphere_id, cim },
    }
}

use cim::*;

/// Every `.vmx` `guestOS` key VMware defines, with its vSphere guest id and CIM OS type, in
/// the order of VMware's table (Windows, Linux, NetWare, Solaris, macOS, ESXi, others). Keys
/// that only VMware's older products wrote (`nt4`, `whistler`, `linux`, the
/// `winServer2008*`/`winVista*` edition keys) are kept: archives of old VMs carry them.
pub(crate) const GUEST_OS: &[GuestOsEntry] = &[
    g("win31", "win31Guest", WIN3X),
    g("win95", "win95Guest", WIN95),
    g("win98", "win98Guest", WIN98),
    g("winMe", "winMeGuest", WINDOWS_ME),
    g("winNT", "winNTGuest", WINNT),
    g("nt4", "winNTGuest", WINNT),
    g("win2000", "win2000ProGuest", WINDOWS_2000),
    g("win2000Pro", "win2000ProGuest", WINDOWS_2000),
    g("win2000Serv", "win2000ServGuest", WINDOWS_2000),
    g("win2000AdvServ", "win2000AdvServGuest", WINDOWS_2000),
    g("winXPHome", "winXPHomeGuest", WINDOWS_XP),
    g("whistler", "winXPHomeGuest", WINDOWS_XP),
    g("winXPPro", "winXPProGuest", WINDOWS_XP),
    g("winXPPro-64", "winXPPro64Guest", WINDOWS_XP_64),
    g("winNetWeb", "winNetWebGuest", WINDOWS_SERVER_2003),
    g("winNetStandard", "winNetStandardGuest", WINDOWS_SERVER_2003),
    g(
        "winNetEnterprise",
        "winNetEnterpriseGuest",
        WINDOWS_SERVER_2003,
    ),
    g(
        "winNetDatacenter",
        "winNetDatacenterGuest",
        WINDOWS_SERVER_2003,
    ),
    g("winNetBusiness", "winNetBusinessGuest", WINDOWS_SERVER_2003),
    g(
        "winNetStandard-64",
        "winNetStandard64Guest",
        WINDOWS_SERVER_2003_64,
    ),
    g(
        "winNetEnterprise-64",
        "winNetEnterprise64Guest",
        WINDOWS_SERVER_2003_64,
    ),
    g(
        "winNetDatacenter-64",
        "winNetDatacenter64Guest",
        WINDOWS_SERVER_2003_64,
    ),
    g("longhorn", "winLonghornGuest", WINDOWS_SERVER_2008),
    g("longhorn-64", "winLonghorn64Guest", WINDOWS_SERVER_2008_64),
    g("winvista", "winVistaGuest", WINDOWS_VISTA),
    g("winvista-64", "winVista64Guest", WINDOWS_VISTA_64),
    g("windows7", "windows7Guest", WINDOWS_7),
    g("windows7-64", "windows7_64Guest", WINDOWS_7),
    g(
        "windows7srv-64",
        "windows7Server64Guest",
        WINDOWS_SERVER_2008_R2,
    ),
    g("windows8", "windows8Guest", WINDOWS_8),
    g("windows8-64", "windows8_64Guest", WINDOWS_8_64),
    g(
        "windows8srv-64",
        "windows8Server64Guest",
        WINDOWS_SERVER_2012,
    ),
    g("windows9", "windows9Guest", WINDOWS_8),
    g("windows9-64", "windows9_64Guest", WINDOWS_8_64),
    g("windows11-64", "windows11_64Guest", WINDOWS_8_64),
    g("windows12-64", "windows12_64Guest", WINDOWS_8_64),
    g(
        "windows9srv-64",
        "windows9Server64Guest",
        WINDOWS_SERVER_2012_R2,
    ),
    g(
        "windows2019srv-64",
        "windows2019srv_64Guest",
        WINDOWS_SERVER_2012_R2,
    ),
    g(
        "windows2019srvNext-64",
        "windows2019srvNext_64Guest",
        WINDOWS_SERVER_2012_R2,
    ),
    g(
        "windows2022srvNext-64",
        "windows2022srvNext_64Guest",
        WINDOWS_SERVER_2012_R2,
    ),
    g("winHyperV", "windowsHyperVGuest", WINDOWS_SERVER_2012_R2),
    g(
        "winServer2008Cluster-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008Datacenter-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008DatacenterCore-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008Enterprise-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008EnterpriseCore-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008EnterpriseItanium-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008SmallBusiness-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008SmallBusinessPremium-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008Standard-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008StandardCore-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008MediumManagement-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008MediumMessaging-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008MediumSecurity-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008ForSmallBusiness-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008StorageEnterprise-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008StorageExpress-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008StorageStandard-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008StorageWorkgroup-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008Web-32",
        "winLonghornGuest",
        WINDOWS_SERVER_2008,
    ),
    g(
        "winServer2008Cluster-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008Datacenter-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008DatacenterCore-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008Enterprise-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008EnterpriseCore-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008EnterpriseItanium-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008SmallBusiness-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008SmallBusinessPremium-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008Standard-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008StandardCore-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008MediumManagement-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008MediumMessaging-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008MediumSecurity-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008ForSmallBusiness-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008StorageEnterprise-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008StorageExpress-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008StorageStandard-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008StorageWorkgroup-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g(
        "winServer2008Web-64",
        "winLonghorn64Guest",
        WINDOWS_SERVER_2008_64,
    ),
    g("winVistaUltimate-32", "winVistaGuest", WINDOWS_VISTA),
    g("winVistaHomePremium-32", "winVistaGuest", WINDOWS_VISTA),
    g("winVistaHomeBasic-32", "winVistaGuest", WINDOWS_VISTA),
    g("winVistaEnterprise-32", "winVistaGuest", WINDOWS_VISTA),
    g("winVistaBusiness-32", "winVistaGuest", WINDOWS_VISTA),
    g("winVistaStarter-32", "winVistaGuest", WINDOWS_VISTA),
    g("winVistaUltimate-64", "winVista64Guest", WINDOWS_VISTA_64),
    g(
        "winVistaHomePremium-64",
        "winVista64Guest",
        WINDOWS_VISTA_64,
    ),
    g("winVistaHomeBasic-64", "winVista64Guest", WINDOWS_VISTA_64),
    g("winVistaEnterprise-64", "winVista64Guest", WINDOWS_VISTA_64),
    g("winVistaBusiness-64", "winVista64Guest", WINDOWS_VISTA_64),
    g("winVistaStarter-64", "winVista64Guest", WINDOWS_VISTA_64),
    g("redhat", "redhatGuest", LINUX),
    g("rhel2", "rhel2Guest", RHEL),
    g("rhel3", "rhel3Guest", RHEL),
    g("rhel3-64", "rhel3_64Guest", RHEL_64),
    g("rhel4", "rhel4Guest", RHEL),
    g("rhel4-64", "rhel4_64Guest", RHEL_64),
    g("rhel5", "rhel5Guest", RHEL),
    g("rhel5-64", "rhel5_64Guest", RHEL_64),
    g("rhel6", "rhel6Guest", RHEL),
    g("rhel6-64", "rhel6_64Guest", RHEL_64),
    g("rhel7", "rhel7Guest", RHEL),
    g("rhel7-64", "rhel7_64Guest", RHEL_64),
    g("rhel8-64", "rhel8_64Guest", RHEL_64),
    g("rhel9-64", "rhel9_64Guest", RHEL_64),
    g("rhel10-64", "rhel10_64Guest", RHEL_64),
    g("centos", "centosGuest", CENTOS),
    g("centos-64", "centos64Guest", CENTOS_64),
    g("centos6", "centos6Guest", CENTOS),
    g("centos6-64", "centos6_64Guest", CENTOS_64),
    g("centos7", "centos7Guest", CENTOS),
    g("centos7-64", "centos7_64Guest", CENTOS_64),
    g("centos8-64", "centos8_64Guest", CENTOS_64),
    g("centos9-64", "centos9_64Guest", CENTOS_64),
    g("oraclelinux", "oracleLinuxGuest", ORACLE_LINUX),
    g("oraclelinux-64", "oracleLinux64Guest", ORACLE_LINUX_64),
    g("oraclelinux6", "oracleLinux6Guest", ORACLE_LINUX),
    g("oraclelinux6-64", "oracleLinux6_64Guest", ORACLE_LINUX_64),
    g("oraclelinux7", "oracleLinux7Guest", ORACLE_LINUX),
    g("oraclelinux7-64", "oracleLinux7_64Guest", ORACLE_LINUX_64),
    g("oraclelinux8-64", "oracleLinux8_64Guest", ORACLE_LINUX_64),
    g("oraclelinux9-64", "oracleLinux9_64Guest", ORACLE_LINUX_64),
    g("oraclelinux10-64", "oracleLinux10_64Guest", ORACLE_LINUX_64),
    g("suse", "suseGuest", SUSE),
    g("suse-64", "suse64Guest", SUSE_64),
    g("sles", "slesGuest", SLES),
    g("sles-64", "sles64Guest", SLES_64),
    g("sles10", "sles10Guest", SLES),
    g("sles10-64", "sles10_64Guest", SLES_64),
    g("sles11", "sles11Guest", SLES),
    g("sles11-64", "sles11_64Guest", SLES_64),
    g("sles12", "sles12Guest", SLES),
    g("sles12-64", "sles12_64Guest", SLES_64),
    g("sles15-64", "sles15_64Guest", SLES_64),
    g("sles16-64", "sles16_64Guest", SLES_64),
    g("mandrake", "mandrakeGuest", MANDRIVA),
    g("mandrake-64", "mandriva64Guest", MANDRIVA_64),
    g("mandriva", "mandrivaGuest", MANDRIVA),
    g("mandriva-64", "mandriva64Guest", MANDRIVA_64),
    g("turbolinux", "turboLinuxGuest", TURBOLINUX),
    g("turbolinux-64", "turboLinux64Guest", TURBOLINUX_64),
    g("ubuntu", "ubuntuGuest", UBUNTU),
    g("ubuntu-64", "ubuntu64Guest", UBUNTU_64),
    g("debian4", "debian4Guest", DEBIAN),
    g("debian4-64", "debian4_64Guest", DEBIAN_64),
    g("debian5", "debian5Guest", DEBIAN),
    g("debian5-64", "debian5_64Guest", DEBIAN_64),
    g("debian6", "debian6Guest", DEBIAN),
    g("debian6-64", "debian6_64Guest", DEBIAN_64),
    g("debian7", "debian7Guest", DEBIAN),
    g("debian7-64", "debian7_64Guest", DEBIAN_64),
    g("debian8", "debian8Guest", DEBIAN),
    g("debian8-64", "debian8_64Guest", DEBIAN_64),
    g("debian9", "debian9Guest", DEBIAN),
    g("debian9-64", "debian9_64Guest", DEBIAN_64),
    g("debian10", "debian10Guest", DEBIAN),
    g("debian10-64", "debian10_64Guest", DEBIAN_64),
    g("debian11", "debian11Guest", DEBIAN),
    g("debian11-64", "debian11_64Guest", DEBIAN_64),
    g("debian12", "debian12Guest", DEBIAN),
    g("debian12-64", "debian12_64Guest", DEBIAN_64),
    g("debian13", "debian13Guest", DEBIAN),
    g("debian13-64", "debian13_64Guest", DEBIAN_64),
    g("asianux3", "asianux3Guest", LINUX),
    g("asianux3-64", "asianux3_64Guest", LINUX_64),
    g("asianux4", "asianux4Guest", LINUX),
    g("asianux4-64", "asianux4_64Guest", LINUX_64),
    g("asianux5-64", "asianux5_64Guest", LINUX_64),
    g("asianux7-64", "asianux7_64Guest", LINUX_64),
    g("asianux8-64", "asianux8_64Guest", LINUX_64),
    g("asianux9-64", "asianux9_64Guest", LINUX_64),
    g("miraclelinux-64", "miraclelinux_64Guest", LINUX_64),
    g("pardus-64", "pardus_64Guest", LINUX_64),
    g("nld9", "nld9Guest", NOVELL_LINUX_DESKTOP),
    g("oes", "oesGuest", NOVELL_OES),
    g("sjds", "sjdsGuest", SUN_JAVA_DESKTOP_SYSTEM),
    g("opensuse", "opensuseGuest", SUSE),
    g("opensuse-64", "opensuse64Guest", SUSE_64),
    g("fedora", "fedoraGuest", LINUX),
    g("fedora-64", "fedora64Guest", LINUX_64),
    g("coreos-64", "coreos64Guest", LINUX_64),
    g("vmware-photon-64", "vmwarePhoton64Guest", LINUX_64),
    g("other24xlinux", "other24xLinuxGuest", LINUX_2_4),
    g("other24xlinux-64", "other24xLinux64Guest", LINUX_2_4_64),
    g("other26xlinux", "other26xLinuxGuest", LINUX_2_6),
    g("other26xlinux-64", "other26xLinux64Guest", LINUX_2_6_64),
    g("other3xlinux", "other3xLinuxGuest", LINUX),
    g("other3xlinux-64", "other3xLinux64Guest", LINUX_64),
    g("other4xlinux", "other4xLinuxGuest", LINUX),
    g("other4xlinux-64", "other4xLinux64Guest", LINUX_64),
    g("other5xlinux", "other5xLinuxGuest", LINUX),
    g("other5xlinux-64", "other5xLinux64Guest", LINUX_64),
    g("other6xlinux", "other6xLinuxGuest", LINUX),
    g("other6xlinux-64", "other6xLinux64Guest", LINUX_64),
    g("other7xlinux", "other7xLinuxGuest", LINUX),
    g("other7xlinux-64", "other7xLinux64Guest", LINUX_64),
    g("linux", "otherLinuxGuest", LINUX),
    g("otherlinux", "otherLinuxGuest", LINUX),
    g("otherlinux-64", "otherLinux64Guest", LINUX_64),
    g("genericlinux", "genericLinuxGuest", LINUX),
    g("amazonlinux2-64", "amazonlinux2_64Guest", LINUX_64),
    g("amazonlinux3-64", "amazonlinux3_64Guest", LINUX_64),
    g("almalinux-64", "almalinux_64Guest", LINUX_64),
    g("fusionos-64", "fusionos_64Guest", LINUX_64),
    g("rockylinux-64", "rockylinux_64Guest", LINUX_64),
    g("prolinux-64", "prolinux_64Guest", LINUX_64),
    g("kylinlinux-64", "kylinlinux_64Guest", LINUX_64),
    g("flatcar-64", "flatcar_64Guest", LINUX_64),
    g("CRXPod1-64", "crxPod1Guest", LINUX_64),
    g("CRXSys1-64", "crxSys1Guest", LINUX_64),
    g("netware4", "netware4Guest", NETWARE),
    g("netware5", "netware5Guest", NETWARE),
    g("netware6", "netware6Guest", NETWARE),
    g("solaris6", "solaris6Guest", SOLARIS),
    g("solaris7", "solaris7Guest", SOLARIS),
    g("solaris8", "solaris8Guest", SOLARIS),
    g("solaris9", "solaris9Guest", SOLARIS),
    g("solaris10", "solaris10Guest", SOLARIS),
    g("solaris10-64", "solaris10_64Guest", SOLARIS_64),
    g("solaris11-64", "solaris11_64Guest", SOLARIS_64),
    g("darwin", "darwinGuest", MACOS),
    g("darwin-64", "darwin64Guest", MACOS),
    g("darwin10", "darwin10Guest", MACOS),
    g("darwin10-64", "darwin10_64Guest", MACOS),
    g("darwin11", "darwin11Guest", MACOS),
    g("darwin11-64", "darwin11_64Guest", MACOS),
    g("darwin12-64", "darwin12_64Guest", MACOS),
    g("darwin13-64", "darwin13_64Guest", MACOS),
    g("darwin14-64", "darwin14_64Guest", MACOS),
    g("darwin15-64", "darwin15_64Guest", MACOS),
    g("darwin16-64", "darwin16_64Guest", MACOS),
    g("darwin17-64", "darwin17_64Guest", MACOS),
    g("darwin18-64", "darwin18_64Guest", MACOS),
    g("darwin19-64", "darwin19_64Guest", MACOS),
    g("darwin20-64", "darwin20_64Guest", MACOS),
    g("darwin21-64", "darwin21_64Guest", MACOS),
    g("darwin22-64", "darwin22_64Guest", MACOS),
    g("darwin23-64", "darwin23_64Guest", MACOS),
    g("vmkernel", "vmkernelGuest", VMWARE_ESXI),
    g("vmkernel5", "vmkernel5Guest", VMWARE_ESXI),
    g("vmkernel6", "vmkernel6Guest", VMWARE_ESXI),
    g("vmkernel65", "vmkernel65Guest", VMWARE_ESXI),
    g("vmkernel7", "vmkernel7Guest", VMWARE_ESXI),
    g("vmkernel8", "vmkernel8Guest", VMWARE_ESXI),
    g("vmkernel9", "vmkernel9Guest", VMWARE_ESXI),
    g("dos", "dosGuest", MSDOS),
    g("os2", "os2Guest", OS2),
    g("os2experimental", "os2Guest", OS2),
    g("eComStation", "eComStationGuest", ECOMSTATION),
    g("eComStation2", "eComStation2Guest", ECOMSTATION),
    g("freeBSD", "freebsdGuest", FREEBSD),
    g("freeBSD-64", "freebsd64Guest", FREEBSD_64),
    g("freeBSD11", "freebsd11Guest", FREEBSD),
    g("freeBSD11-64", "freebsd11_64Guest", FREEBSD_64),
    g("freeBSD12", "freebsd12Guest", FREEBSD),
    g("freeBSD12-64", "freebsd12_64Guest", FREEBSD_64),
    g("freeBSD13", "freebsd13Guest", FREEBSD),
    g("freeBSD13-64", "freebsd13_64Guest", FREEBSD_64),
    g("freeBSD14", "freebsd14Guest", FREEBSD),
    g("freeBSD14-64", "freebsd14_64Guest", FREEBSD_64),
    g("freeBSD15", "freebsd15Guest", FREEBSD),
    g("freeBSD15-64", "freebsd15_64Guest", FREEBSD_64),
    g("openserver5", "openServer5Guest", SCO_OPENSERVER),
    g("openserver6", "openServer6Guest", SCO_OPENSERVER),
    g("unixware7", "unixWare7Guest", SCO_UNIXWARE),
    g("other", "otherGuest", OTHER),
    g("other-64", "otherGuest64", OTHER_64),
];

/// The OVF's guest for a `.vmx` `guestOS` value, if the table has the key.
pub(crate) fn known(guest_os: &str) -> Option<GuestOs> {
    GUEST_OS
        .iter()
        .find(|e| e.vmx_key.eq_ignore_ascii_case(guest_os))
        .map(|e| e.guest)
}

/// The OVF's guest for a `.vmx` `guestOS` value: the table's row, else [`FALLBACK_64`] for a
/// key ending in `-64` (any case) and [`FALLBACK_32`] for any other.
pub(crate) fn lookup(guest_os: &str) -> GuestOs {
    known(guest_os).unwrap_or_else(|| {
        let b = guest_os.as_bytes();
        let is_64 = b.len() >= 3 && b[b.len() - 3..].eq_ignore_ascii_case(b"-64");
        if is_64 {
            FALLBACK_64
        } else {
            FALLBACK_32
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `tests/data/vsphere-guest-ids.txt`: the enumeration, without its comment lines.
    fn enumeration() -> HashSet<&'static str> {
        include_str!("../../tests/data/vsphere-guest-ids.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    /// Issue 14 item 2: every vSphere id vdar writes is one vSphere defines, fallbacks included.
    #[test]
    fn r14_every_vsphere_id_is_in_the_enumeration() {
        let ids = enumeration();
        assert_eq!(
            ids.len(),
            211,
            "the committed list changed: update the doc counts"
        );
        for e in GUEST_OS {
            assert!(
                ids.contains(e.guest.vsphere_id),
                "{} -> {}: not a VirtualMachineGuestOsIdentifier",
                e.vmx_key,
                e.guest.vsphere_id
            );
        }
        for f in [FALLBACK_32, FALLBACK_64] {
            assert!(ids.contains(f.vsphere_id), "{f:?}");
        }
    }

    /// The table reaches every id of the enumeration, so no vSphere guest is lost to a
    /// fallback when its `.vmx` key is one VMware writes.
    #[test]
    fn every_enumeration_id_has_a_vmx_key() {
        let produced: HashSet<&str> = GUEST_OS.iter().map(|e| e.guest.vsphere_id).collect();
        let mut missing: Vec<&str> = enumeration().difference(&produced).copied().collect();
        missing.sort_unstable();
        assert!(missing.is_empty(), "no .vmx key for {missing:?}");
    }

    #[test]
    fn keys_are_unique_ignoring_case() {
        let mut seen = HashSet::new();
        for e in GUEST_OS {
            assert!(
                seen.insert(e.vmx_key.to_ascii_lowercase()),
                "{} twice",
                e.vmx_key
            );
        }
    }

    /// The CIM column: 64-bit vSphere ids get 64-bit CIM types, and no value above 115 (where
    /// transcriptions of the value map disagree) is used.
    #[test]
    fn cim_values_follow_bitness_and_stay_in_the_agreed_range() {
        // CIM types with no separate 64-bit value: a 64-bit guest may use them.
        let no_64_variant = [
            MACOS,
            VMWARE_ESXI,
            WINDOWS_7,
            WINDOWS_SERVER_2008_R2,
            WINDOWS_SERVER_2012,
            WINDOWS_SERVER_2012_R2,
        ];
        let only_64 = [
            WINDOWS_SERVER_2003_64,
            WINDOWS_XP_64,
            WINDOWS_VISTA_64,
            WINDOWS_SERVER_2008_64,
            FREEBSD_64,
            RHEL_64,
            SOLARIS_64,
            SUSE_64,
            SLES_64,
            MANDRIVA_64,
            TURBOLINUX_64,
            UBUNTU_64,
            DEBIAN_64,
            LINUX_2_4_64,
            LINUX_2_6_64,
            LINUX_64,
            OTHER_64,
            CENTOS_64,
            ORACLE_LINUX_64,
            WINDOWS_8_64,
        ];
        for e in GUEST_OS {
            let GuestOs { vsphere_id, cim } = e.guest;
            assert!((1..=115).contains(&cim.0), "{vsphere_id}: {cim:?}");
            // `crxPod1Guest`/`crxSys1Guest` are 64-bit Linux without a `64` in the id.
            let is_64 = vsphere_id.contains("64") || vsphere_id.starts_with("crx");
            if is_64 {
                assert!(
                    only_64.contains(&cim) || no_64_variant.contains(&cim),
                    "{vsphere_id}: 64-bit guest with 32-bit CIM type {cim:?}"
                );
            } else {
                assert!(
                    !only_64.contains(&cim),
                    "{vsphere_id}: 32-bit guest with 64-bit CIM type {cim:?}"
                );
            }
        }
    }

    /// The rewriting rule got these wrong (issue 14 item 2); each is checked against the
    /// value VMware's own exports carry.
    #[test]
    fn r14_common_keys() {
        let cases = [
            ("ubuntu-64", "ubuntu64Guest", 94),
            ("ubuntu", "ubuntuGuest", 93),
            ("other-64", "otherGuest64", 102),
            ("other", "otherGuest", 1),
            ("windows9srv-64", "windows9Server64Guest", 115),
            ("windows9-64", "windows9_64Guest", 114),
            ("windows2019srvNext-64", "windows2019srvNext_64Guest", 115),
            ("windows7srv-64", "windows7Server64Guest", 103),
            ("windows7-64", "windows7_64Guest", 105),
            ("otherlinux-64", "otherLinux64Guest", 101),
            ("other4xlinux-64", "other4xLinux64Guest", 101),
            ("other26xlinux-64", "other26xLinux64Guest", 100),
            ("centos7-64", "centos7_64Guest", 107),
            ("centos-64", "centos64Guest", 107),
            ("fedora-64", "fedora64Guest", 101),
            ("freebsd-64", "freebsd64Guest", 78),
            ("freeBSD13-64", "freebsd13_64Guest", 78),
            ("oraclelinux-64", "oracleLinux64Guest", 109),
            ("vmware-photon-64", "vmwarePhoton64Guest", 101),
            ("longhorn-64", "winLonghorn64Guest", 77),
            ("winvista", "winVistaGuest", 73),
            ("coreos-64", "coreos64Guest", 101),
            ("opensuse-64", "opensuse64Guest", 83),
            ("winNetStandard-64", "winNetStandard64Guest", 70),
            ("rhel9-64", "rhel9_64Guest", 80),
            ("debian12-64", "debian12_64Guest", 96),
            ("sles15-64", "sles15_64Guest", 85),
            ("darwin23-64", "darwin23_64Guest", 2),
            ("vmkernel8", "vmkernel8Guest", 104),
            ("solaris11-64", "solaris11_64Guest", 81),
        ];
        for (key, id, cim) in cases {
            let got = lookup(key);
            assert_eq!((got.vsphere_id, got.cim.0), (id, cim), "{key}");
            // Case does not matter, as in VMware's lookup.
            assert_eq!(lookup(&key.to_ascii_uppercase()), got, "{key}");
        }
    }

    /// Issue 14 item 2: an unknown key gets the documented fallback, by its `-64` suffix.
    #[test]
    fn r14_unknown_keys_fall_back_to_other() {
        for key in ["arm-ubuntu-64", "someFutureOs-64", "FUTURE-64"] {
            assert_eq!(known(key), None, "{key}");
            assert_eq!(lookup(key), FALLBACK_64, "{key}");
        }
        for key in ["", "-6", "64", "someFutureOs", "ubuntu_64", "x-64 "] {
            assert_eq!(known(key), None, "{key}");
            assert_eq!(lookup(key), FALLBACK_32, "{key}");
        }
        assert_eq!(
            (FALLBACK_32.vsphere_id, FALLBACK_32.cim.0),
            ("otherGuest", 1)
        );
        assert_eq!(
            (FALLBACK_64.vsphere_id, FALLBACK_64.cim.0),
            ("otherGuest64", 102)
        );
    }
}
