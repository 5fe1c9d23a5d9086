//! `iesp-test interop ipxe URL [--nic e1000|virtio]`: does iPXE boot from
//! the target, and does the iBFT it publishes describe the session?
//!
//! Steps: write the [`bootsector`](super::bootsector) to LBA 0 with our
//! initiator; boot qemu from the network (iPXE ROM, DHCP and TFTP from
//! qemu's user network) into a script that `sanboot`s the LUN at the
//! guest-only target address; wait for the boot sector's marker on the
//! serial console; wait for its iBFT dump; decode it ([`Ibft`]), check the
//! checksum and compare initiator IQN, target IQN, address, port and LUN
//! with the URL. A missing marker fails with the console's tail.

use std::time::{Duration, Instant};

use iesp_blockio::buf::AlignedBuf;
use iesp_blockio::iscsi::IscsiDevice;
use iesp_blockio::{Device, OpenOptions};

use super::bootsector::{self, END, IBFT_PREFIX, MARKER, NO_IBFT};
use super::qemu::{GUEST_TARGET_IP, Vm, Waited, netdev};
use super::report::Report;
use super::{Context, IpxeArgs, Nic};

/// What SeaBIOS prints when no boot device (iPXE's sanboot among them)
/// worked.
const NO_BOOT_DEVICE: &str = "No bootable device";

/// Console lines kept in a failure report.
const TAIL_LINES: usize = 25;

/// The fields of an iBFT (iSCSI Boot Firmware Table 1.03) the check compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ibft {
    pub initiator_iqn: String,
    pub target_iqn: String,
    pub target_ip: String,
    pub target_port: u16,
    pub lun: u64,
}

fn u16_at(t: &[u8], at: usize) -> Result<u16, String> {
    t.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("iBFT: offset {at} beyond the table's {} bytes", t.len()))
}

/// The string a (length, offset) pair at `at` names.
fn string_at(t: &[u8], at: usize) -> Result<String, String> {
    let len = usize::from(u16_at(t, at)?);
    let off = usize::from(u16_at(t, at + 2)?);
    t.get(off..off + len)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| format!("iBFT: string at {off}+{len} beyond the table"))
}

/// An IPv4-mapped address (16 bytes) as text.
fn ip_at(t: &[u8], at: usize) -> Result<String, String> {
    let b = t
        .get(at..at + 16)
        .ok_or_else(|| format!("iBFT: address at {at} beyond the table"))?;
    if b[..10].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff {
        Ok(format!("{}.{}.{}.{}", b[12], b[13], b[14], b[15]))
    } else {
        let a: [u8; 16] = b.try_into().map_err(|_| "iBFT: address".to_owned())?;
        Ok(std::net::Ipv6Addr::from(a).to_string())
    }
}

impl Ibft {
    /// Decodes a whole table: signature, length, checksum, then the
    /// control structure's initiator and first target.
    pub fn decode(t: &[u8]) -> Result<Ibft, String> {
        if t.len() < 48 || &t[..4] != b"iBFT" {
            return Err("not an iBFT (no signature)".into());
        }
        let len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
        if len != t.len() {
            return Err(format!("iBFT length {len}, {} bytes dumped", t.len()));
        }
        let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        if sum != 0 {
            return Err(format!("iBFT checksum wrong: the bytes sum to {sum:#04x}"));
        }
        // Control structure at 48: id 1; initiator, nic0, target0 offsets.
        let control = 48;
        if t[control] != 1 {
            return Err(format!(
                "iBFT: structure id {} at 48, not the control",
                t[control]
            ));
        }
        let initiator = usize::from(u16_at(t, control + 8)?);
        let target = usize::from(u16_at(t, control + 12)?);
        if initiator == 0 || target == 0 {
            return Err("iBFT names no initiator or no target".into());
        }
        if t.get(initiator) != Some(&2) || t.get(target) != Some(&4) {
            return Err("iBFT: initiator or target structure has the wrong id".into());
        }
        let lun = t
            .get(target + 24..target + 32)
            .map(|b| {
                // SAM LUN, first level: flat/peripheral addressing.
                u64::from(u16::from_be_bytes([b[0] & 0x3f, b[1]]))
            })
            .ok_or("iBFT: LUN beyond the table")?;
        Ok(Ibft {
            initiator_iqn: string_at(t, initiator + 70)?,
            target_iqn: string_at(t, target + 34)?,
            target_ip: ip_at(t, target + 6)?,
            target_port: u16_at(t, target + 22)?,
            lun,
        })
    }
}

/// The table's bytes from the console, between [`IBFT_PREFIX`] and [`END`].
/// Anything but hex digits in between is an error that shows where the
/// dump broke and what interrupted it.
fn dumped_table(console: &str) -> Result<Vec<u8>, String> {
    let start = console
        .find(IBFT_PREFIX)
        .ok_or("no iBFT dump on the console")?
        + IBFT_PREFIX.len();
    let end = console[start..]
        .find(END)
        .map_or(console.len(), |e| start + e);
    let hex = console[start..end].trim_end();
    if let Some(bad) = hex.find(|c: char| !c.is_ascii_hexdigit()) {
        let after: String = hex[bad..].chars().take(40).collect();
        return Err(format!(
            "the iBFT dump breaks after {bad} hex digits: {after:?} follows"
        ));
    }
    if hex.len() % 2 != 0 {
        return Err("odd number of hex digits in the iBFT dump".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// Writes `sector` (or zeros) to LBA 0 with our initiator.
async fn write_lba0(ctx: &Context, sector: Option<[u8; 512]>) -> Result<String, String> {
    let opts = OpenOptions {
        write: true,
        force: true,
        ..OpenOptions::default()
    };
    let dev = IscsiDevice::open(&ctx.target.raw, &opts)
        .await
        .map_err(|e| e.to_string())?;
    let info = dev.info().clone();
    let mut buf = AlignedBuf::new(info.block_size as usize, info.align.max(512));
    buf.fill(0);
    if let Some(s) = sector {
        buf[..512].copy_from_slice(&s);
    }
    let (_, r) = dev.write(0, buf, true).await;
    r.map_err(|e| e.to_string())?;
    dev.close().await.map_err(|e| e.to_string())?;
    Ok(match sector {
        Some(_) => format!("boot sector in LBA 0 ({}-byte blocks)", info.block_size),
        None => "LBA 0 zeroed: no boot sector (negative control)".to_owned(),
    })
}

/// The iPXE script qemu's TFTP serves.
fn script(ctx: &Context, a: &IpxeArgs) -> String {
    let t = &ctx.target;
    let mut s = format!("#!ipxe\ndhcp\nset initiator-iqn {}\n", a.initiator_iqn);
    if let (Some(u), Some(p)) = (&t.url.user, &t.url.password) {
        s.push_str(&format!("set username {u}\nset password {p}\n"));
    }
    s.push_str(&format!(
        "sanboot iscsi:{GUEST_TARGET_IP}::{}:{}:{}\n",
        t.addr.port(),
        t.lun,
        t.iqn
    ));
    s
}

/// Runs the check.
pub async fn check(ctx: &Context, a: &IpxeArgs) -> anyhow::Result<Report> {
    let mut rep = ctx.report();
    let t0 = Instant::now();
    let sector = (!a.skip_boot_sector).then(bootsector::sector);
    let r = write_lba0(ctx, sector).await;
    if !rep.step("write boot sector", t0.elapsed(), r) {
        return Ok(rep);
    }
    let (ctx, a) = (ctx.clone(), a.clone());
    tokio::task::spawn_blocking(move || boot(&ctx, &a, rep)).await?
}

/// The VM part of the check (blocking).
fn boot(ctx: &Context, a: &IpxeArgs, mut rep: Report) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("boot.ipxe"), script(ctx, a))?;
    let console = dir.path().join("console.txt");
    let log = dir.path().join("qemu.txt");
    let net = netdev(
        ctx.target.addr,
        &format!("tftp={},bootfile=boot.ipxe", dir.path().display()),
    )?;
    let nic = match a.nic {
        Nic::E1000 => "e1000",
        Nic::Virtio => "virtio-net-pci",
    };
    let mut cmd = ctx.qemu.system(&console, 256);
    // graphics=off: the BIOS text console (SeaBIOS, iPXE) is copied to the
    // serial port (sgabios), so a failure report shows what iPXE said.
    cmd.args([
        "-machine",
        "graphics=off",
        "-boot",
        "n",
        "-netdev",
        &net,
        "-device",
    ])
    .arg(format!("{nic},netdev=n0"));
    let mut vm = Vm::spawn(cmd, &console, &log)?;
    let secs = ctx.timeout.as_secs_f64();
    // The BIOS gives up when iPXE could not boot: no need to wait longer.
    let waited = vm
        .wait_for(ctx.timeout, |c| {
            c.contains(MARKER) || c.contains(NO_BOOT_DEVICE)
        })
        .and_then(|t| {
            if vm.console().contains(MARKER) {
                Ok(t)
            } else {
                Err(Waited::GaveUp(NO_BOOT_DEVICE))
            }
        });
    let ok = rep.step(
        "boot sector runs",
        vm.started.elapsed(),
        waited
            .map(|t| {
                format!(
                    "marker after {:.1} s from qemu start ({nic})",
                    t.as_secs_f64()
                )
            })
            .map_err(|w| no_marker(MARKER, secs, &w)),
    );
    if !ok {
        rep.console_tail = Some(vm.tail(TAIL_LINES));
        return Ok(rep);
    }
    let t = Instant::now();
    let waited = vm.wait_for(Duration::from_secs(10), |c| {
        c.contains(END) || c.contains(NO_IBFT)
    });
    let console_text = vm.console();
    let found = match waited {
        Ok(_) if console_text.contains(NO_IBFT) => {
            Err("the boot sector found no iBFT with a valid checksum in 0x00400-0xFFFF0".into())
        }
        Ok(_) => dumped_table(&console_text),
        Err(w) => Err(no_marker(END, 10.0, &w)),
    };
    let table = match found {
        Ok(t) => t,
        Err(e) => {
            rep.step("iBFT found", t.elapsed(), Err(e));
            rep.console_tail = Some(vm.tail(TAIL_LINES));
            return Ok(rep);
        }
    };
    rep.step(
        "iBFT found",
        t.elapsed(),
        Ok(format!("{} bytes", table.len())),
    );
    vm.finish(Duration::ZERO);
    let decoded = Ibft::decode(&table);
    let ibft = match decoded {
        Ok(i) => {
            rep.step("iBFT checksum", Duration::ZERO, Ok("bytes sum to 0".into()));
            i
        }
        Err(e) => {
            rep.step("iBFT checksum", Duration::ZERO, Err(e));
            rep.console_tail = Some(vm.tail(TAIL_LINES));
            return Ok(rep);
        }
    };
    let want = Ibft {
        initiator_iqn: a.initiator_iqn.clone(),
        target_iqn: ctx.target.iqn.clone(),
        target_ip: GUEST_TARGET_IP.to_owned(),
        target_port: ctx.target.addr.port(),
        lun: u64::from(ctx.target.lun),
    };
    rep.step(
        "iBFT fields",
        Duration::ZERO,
        if ibft == want {
            Ok(format!(
                "initiator {}, target {} at {}:{} LUN {}",
                ibft.initiator_iqn, ibft.target_iqn, ibft.target_ip, ibft.target_port, ibft.lun
            ))
        } else {
            Err(format!("iBFT says {ibft:?}, expected {want:?}"))
        },
    );
    Ok(rep)
}

/// "no marker within N s", or that qemu exited first.
fn no_marker(marker: &str, secs: f64, w: &Waited) -> String {
    match w {
        Waited::Timeout(_) => format!("no marker {marker:?} within {secs:.0} s"),
        Waited::Exited(s) => {
            format!("no marker {marker:?} within {secs:.0} s: qemu exited first ({s})")
        }
        Waited::GaveUp(why) => {
            format!("no marker {marker:?} within {secs:.0} s: the console says {why:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_dump_gives_its_bytes() {
        let console = format!("x\n{MARKER}\n{IBFT_PREFIX}69424654FF00\n{END}\n");
        assert_eq!(
            dumped_table(&console).unwrap(),
            vec![0x69, 0x42, 0x46, 0x54, 0xff, 0x00]
        );
    }

    #[test]
    fn an_interrupted_dump_says_where_it_broke() {
        let console = format!("{IBFT_PREFIX}6942\nBooting from ROM..\n4654\n{END}\n");
        let e = dumped_table(&console).unwrap_err();
        assert!(
            e.starts_with("the iBFT dump breaks after 4 hex digits: \"\\nBooting from"),
            "{e}"
        );
    }

    #[test]
    fn a_short_table_fails_on_its_length() {
        let mut t = vec![0u8; 64];
        t[..4].copy_from_slice(b"iBFT");
        t[4] = 80;
        assert_eq!(
            Ibft::decode(&t).unwrap_err(),
            "iBFT length 80, 64 bytes dumped"
        );
    }
}
