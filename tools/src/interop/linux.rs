//! `iesp-test interop linux URL`: does the Linux kernel initiator see the
//! LUN and keep its data?
//!
//! A Debian kernel boots in qemu (TCG, virtio-net, restricted user
//! network) from an [`initramfs`](super::initramfs) whose `/init` (the
//! script [`init_script`] writes) loads the modules, sets the guest's
//! address, logs in with `iscsistart`, finds the LUN's disk through
//! `/sys/class/scsi_disk/H:C:T:LUN` (sdX order is not LUN order), runs
//! `iesp-test verify --write` then `--check` on it, a `dd` round trip with
//! O_DIRECT beyond the verified range, `mke2fs -t ext4` and `e2fsck -f`,
//! and powers off. Each step prints `IESP-STEP NAME ok|fail DETAIL` on the
//! console; the host turns these into the report as they arrive.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::initramfs;
use super::qemu::{GUEST_IP, GUEST_TARGET_IP, Vm, netdev};
use super::report::Report;
use super::{Context, LinuxArgs};

/// The console prefix of a step's result.
const STEP: &str = "IESP-STEP ";
/// The guest's last line.
const DONE: &str = "IESP-DONE";
/// Printed by /init as soon as it runs.
const UP: &str = "IESP-GUEST-UP";
/// Console lines kept in a failure report.
const TAIL_LINES: usize = 30;
/// Bytes of the dd round trip.
const DD_BYTES: u64 = 512 << 10;

/// Quotes `s` for the guest's shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The guest's `/init`.
pub fn init_script(ctx: &Context, a: &LinuxArgs, seed: u64) -> String {
    let t = &ctx.target;
    let mut login = format!(
        "iscsistart -i {} -t {} -g 1 -a {GUEST_TARGET_IP} -p {}",
        sh_quote(&a.initiator_iqn),
        sh_quote(&t.iqn),
        t.addr.port()
    );
    if let (Some(u), Some(p)) = (&t.url.user, &t.url.password) {
        login.push_str(&format!(" -u {} -w {}", sh_quote(u), sh_quote(p)));
    }
    let bytes = a.bytes;
    let dd_blocks = DD_BYTES / 65536;
    let dd_seek = bytes.div_ceil(65536);
    let modules = initramfs::MODULES.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo {UP}
step() {{ echo "{STEP}$1 $2 $(echo "$3" | tr '\n' ' ' | cut -c1-300)"; }}
finish() {{ echo {DONE}; sync; poweroff -f; }}
for m in {modules}; do
  if ! insmod /m/$m.ko 2>/tmp/err; then step modules fail "$m: $(cat /tmp/err)"; finish; fi
done
step modules ok "{count} modules"
ip link set lo up
ip link set eth0 up
ip addr add {GUEST_IP}/24 dev eth0
if {login} >/tmp/login 2>&1; then step login ok "iscsistart logged in"
else step login fail "$(tail -n 4 /tmp/login)"; finish; fi
dev=""
i=0
while [ $i -lt 200 ]; do
  for d in /sys/class/scsi_disk/*:*:*:{lun}; do
    [ -d "$d/device/block" ] && dev=$(ls "$d/device/block" | head -n 1)
  done
  [ -n "$dev" ] && [ -b "/dev/$dev" ] && break
  dev=""
  sleep 0.1
  i=$((i+1))
done
if [ -z "$dev" ]; then step disk fail "no disk for LUN {lun} in /sys/class/scsi_disk: $(ls /sys/class/scsi_disk)"; finish; fi
step disk ok "LUN {lun} is /dev/$dev ($(cat /sys/class/block/$dev/size) sectors)"
V="/iesp-test verify --force --seed {seed} --length {bytes} --io-size 256k --qd 4 --progress quiet"
if $V --write /dev/$dev >/tmp/v 2>&1; then step verify-write ok "$(tail -n 1 /tmp/v)"
else step verify-write fail "$(grep -v '^$' /tmp/v | tail -n 3)"; fi
if $V --check /dev/$dev >/tmp/v 2>&1; then step verify-check ok "$(tail -n 1 /tmp/v)"
else step verify-check fail "$(grep -v '^$' /tmp/v | tail -n 3)"; fi
dd if=/dev/urandom of=/tmp/dd.in bs=65536 count={dd_blocks} 2>/dev/null
if dd if=/tmp/dd.in of=/dev/$dev bs=65536 seek={dd_seek} oflag=direct 2>/tmp/e &&
   dd if=/dev/$dev of=/tmp/dd.out bs=65536 skip={dd_seek} count={dd_blocks} iflag=direct 2>>/tmp/e &&
   cmp /tmp/dd.in /tmp/dd.out >>/tmp/e 2>&1
then step dd-direct ok "{DD_BYTES} bytes at block {dd_seek} written and read back with O_DIRECT"
else step dd-direct fail "$(cat /tmp/e)"; fi
if /sbin/mke2fs -t ext4 -q -F /dev/$dev >/tmp/e 2>&1; then step mkfs.ext4 ok "mke2fs -t ext4"
else step mkfs.ext4 fail "$(cat /tmp/e)"; fi
if /sbin/e2fsck -f -n /dev/$dev >/tmp/e 2>&1; then step e2fsck ok "$(tail -n 1 /tmp/e)"
else step e2fsck fail "$(tail -n 3 /tmp/e)"; fi
finish
"#,
        count = initramfs::MODULES.len(),
        lun = t.lun,
    )
}

/// The steps the guest reports, in order.
pub const GUEST_STEPS: &[&str] = &[
    "modules",
    "login",
    "disk",
    "verify-write",
    "verify-check",
    "dd-direct",
    "mkfs.ext4",
    "e2fsck",
];

/// Runs the check.
pub async fn check(ctx: &Context, a: &LinuxArgs) -> anyhow::Result<Report> {
    let seed = iesp_cli::seed::resolve(a.seed, "iesp-test interop linux");
    if !ctx.quiet {
        eprintln!("interop linux: guest verify seed {seed}");
    }
    let (ctx, a) = (ctx.clone(), a.clone());
    tokio::task::spawn_blocking(move || run_guest(&ctx, &a, seed)).await?
}

fn run_guest(ctx: &Context, a: &LinuxArgs, seed: u64) -> anyhow::Result<Report> {
    let mut rep = ctx.report();
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let tool = match &a.guest_tool {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let guest = initramfs::build(&ctx.cache, &init_script(ctx, a, seed), &tool, dir.path())
        .map_err(crate::exit::io)?;
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, &guest.initramfs)?;
    rep.step(
        "initramfs",
        t.elapsed(),
        Ok(format!("{} bytes", guest.initramfs.len())),
    );
    let console = dir.path().join("console.txt");
    let log = dir.path().join("qemu.txt");
    let mut cmd = ctx.qemu.system(&console, 512);
    cmd.arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .args(["-netdev", &netdev(ctx.target.addr, "")?])
        .args(["-device", "virtio-net-pci,netdev=n0"]);
    let mut vm = Vm::spawn(cmd, &console, &log)?;
    let mut last = Instant::now();
    let mut seen: HashSet<String> = HashSet::new();
    let mut booted = false;
    let secs = ctx.timeout.as_secs_f64();
    let mut exited = false;
    loop {
        let text = vm.console();
        if !booted && text.contains(UP) {
            booted = true;
            rep.step("boot", last.elapsed(), Ok("kernel up, /init runs".into()));
            last = Instant::now();
        }
        // Whole lines only: the last one may still be being written.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let Some(rest) = line.trim_end().strip_prefix(STEP) else {
                continue;
            };
            let mut parts = rest.splitn(3, ' ');
            let (name, verdict, detail) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("").trim().to_owned(),
            );
            if !seen.insert(name.to_owned()) {
                continue;
            }
            let r = if verdict == "ok" {
                Ok(detail)
            } else {
                Err(detail)
            };
            rep.step(name, last.elapsed(), r);
            last = Instant::now();
        }
        if text.contains(DONE) {
            break;
        }
        // qemu's exit is acted on after one more read of the console.
        if exited || last.elapsed() >= ctx.timeout {
            let next = if booted {
                GUEST_STEPS
                    .iter()
                    .find(|s| !seen.contains(**s))
                    .copied()
                    .unwrap_or("done")
            } else {
                "boot"
            };
            let why = if exited {
                format!("no marker for {next} within {secs:.0} s: qemu exited first")
            } else {
                format!("no marker for {next} within {secs:.0} s")
            };
            rep.step(next, last.elapsed(), Err(why));
            rep.console_tail = Some(vm.tail(TAIL_LINES));
            return Ok(rep);
        }
        let waited = vm.wait_for(Duration::from_millis(200), |_| false);
        exited = matches!(waited, Err(super::qemu::Waited::Exited(_)));
    }
    vm.finish(Duration::from_secs(3));
    let missing: Vec<&str> = GUEST_STEPS
        .iter()
        .filter(|s| !seen.contains(**s))
        .copied()
        .collect();
    if !rep.passed || !missing.is_empty() {
        rep.console_tail = Some(vm.tail(TAIL_LINES));
        if !missing.is_empty() && rep.passed {
            rep.step(
                "all steps",
                Duration::ZERO,
                Err(format!("the guest skipped {}", missing.join(", "))),
            );
        }
    }
    Ok(rep)
}
