//! The 512-byte boot sector the iPXE check writes to LBA 0, assembled here
//! at run time from hand-encoded 16-bit x86 instructions (a tiny assembler
//! with labels, [`Asm`]; each instruction is written with its mnemonic).
//!
//! What it does, in real mode, loaded by iPXE's `sanboot` at 0000:7C00:
//!
//! 1. prints [`MARKER`] on the first serial port (I/O port 0x3F8);
//! 2. scans memory from 0x00400 to 0xFFFF0 on 16-byte boundaries (where an
//!    iBFT may live: iPXE puts it in base memory; the spec also allows
//!    0xE0000–0xFFFFF) for the signature `iBFT` whose length is plausible
//!    (48 bytes to 8 KiB) and whose bytes sum to zero (the checksum);
//! 3. prints [`IBFT_PREFIX`] and the whole table in hex, then [`END`];
//!    or [`NO_IBFT`] when nothing matched;
//! 4. halts.
//!
//! Interrupts are off from the first instruction, and each byte waits for
//! the UART's transmit register to be empty, so the dump reaches the
//! console whole and uninterleaved.
//!
//! The host decodes the hex ([`super::ipxe::Ibft`]), checks the checksum
//! again and compares the initiator IQN, target IQN, address, port and LUN
//! with the URL. The signature is compared as an immediate (never stored
//! as text in the sector), so the scan cannot find the code itself.

/// Printed first: the boot sector ran.
pub const MARKER: &str = "IESP-BOOT-SECTOR";
/// Precedes the iBFT's bytes in hex.
pub const IBFT_PREFIX: &str = "IESP-IBFT ";
/// Printed when no valid iBFT was found.
pub const NO_IBFT: &str = "IESP-NO-IBFT";
/// Printed after the hex.
pub const END: &str = "IESP-END";

/// Where BIOS and iPXE load a boot sector.
const ORIGIN: u16 = 0x7c00;

/// A label's use to patch once the label is placed.
enum Fixup {
    Rel8(usize, &'static str),
    Rel16(usize, &'static str),
    Abs16(usize, &'static str),
}

/// A byte buffer with labels: just enough of an assembler for this sector.
struct Asm {
    code: Vec<u8>,
    labels: Vec<(&'static str, usize)>,
    fixups: Vec<Fixup>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            code: Vec::new(),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    /// Raw bytes of one instruction (the mnemonic is the caller's comment).
    fn op(&mut self, bytes: &[u8]) -> &mut Asm {
        self.code.extend_from_slice(bytes);
        self
    }

    fn label(&mut self, name: &'static str) -> &mut Asm {
        self.labels.push((name, self.code.len()));
        self
    }

    /// `opcode rel8` to `target` (jcc short, jmp short, loop).
    fn rel8(&mut self, opcode: u8, target: &'static str) -> &mut Asm {
        self.code.push(opcode);
        self.fixups.push(Fixup::Rel8(self.code.len(), target));
        self.code.push(0);
        self
    }

    /// `call rel16` (E8).
    fn call(&mut self, target: &'static str) -> &mut Asm {
        self.code.push(0xe8);
        self.fixups.push(Fixup::Rel16(self.code.len(), target));
        self.code.extend_from_slice(&[0, 0]);
        self
    }

    /// `mov si, imm16` with the address of `target` (BE iw).
    fn mov_si(&mut self, target: &'static str) -> &mut Asm {
        self.code.push(0xbe);
        self.fixups.push(Fixup::Abs16(self.code.len(), target));
        self.code.extend_from_slice(&[0, 0]);
        self
    }

    /// A zero-terminated string.
    fn string(&mut self, name: &'static str, text: &str) -> &mut Asm {
        self.label(name);
        self.code.extend_from_slice(text.as_bytes());
        self.code.push(0);
        self
    }

    fn at(&self, name: &str) -> usize {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("boot sector: no label {name}"))
    }

    /// The code with every fixup resolved. Panics on a jump out of range
    /// or a missing label: both are bugs in [`sector`], caught by its test.
    fn finish(mut self) -> Vec<u8> {
        for f in std::mem::take(&mut self.fixups) {
            match f {
                Fixup::Rel8(at, l) => {
                    let d = self.at(l) as isize - (at as isize + 1);
                    let d = i8::try_from(d).unwrap_or_else(|_| panic!("jump to {l} too far"));
                    self.code[at] = d as u8;
                }
                Fixup::Rel16(at, l) => {
                    let d = (self.at(l) as isize - (at as isize + 2)) as i16;
                    self.code[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
                Fixup::Abs16(at, l) => {
                    let a = ORIGIN + self.at(l) as u16;
                    self.code[at..at + 2].copy_from_slice(&a.to_le_bytes());
                }
            }
        }
        self.code
    }
}

/// The boot sector: 512 bytes ending in the 0x55 0xAA signature.
pub fn sector() -> [u8; 512] {
    let mut a = Asm::new();
    a.op(&[0xfa]) // cli
        .op(&[0x31, 0xc0]) // xor ax, ax
        .op(&[0x8e, 0xd8]) // mov ds, ax
        .op(&[0x8e, 0xd0]) // mov ss, ax
        .op(&[0xbc, 0x00, 0x7c]) // mov sp, 0x7c00
        // Interrupts stay off to the end: no handler (the BIOS's, iPXE's)
        // can write to COM1 in the middle of the dump.
        .op(&[0xfc]) // cld
        .mov_si("marker")
        .call("puts")
        .op(&[0xbb, 0x40, 0x00]) // mov bx, 0x0040 (segment: 0x00400)
        .label("scan")
        .op(&[0x8e, 0xc3]) // mov es, bx
        // cmp dword [es:0], 'iBFT'
        .op(&[0x26, 0x66, 0x81, 0x3e, 0x00, 0x00, b'i', b'B', b'F', b'T'])
        .rel8(0x75, "next") // jne next
        .op(&[0x26, 0x8b, 0x0e, 0x04, 0x00]) // mov cx, [es:4] (length)
        .op(&[0x83, 0xf9, 0x30]) // cmp cx, 48
        .rel8(0x72, "next") // jb next
        .op(&[0x81, 0xf9, 0x00, 0x20]) // cmp cx, 0x2000
        .rel8(0x73, "next") // jae next
        .op(&[0x26, 0x83, 0x3e, 0x06, 0x00, 0x00]) // cmp word [es:6], 0 (length < 64 KiB)
        .rel8(0x75, "next") // jne next
        .op(&[0x31, 0xff]) // xor di, di
        .op(&[0x30, 0xc0]) // xor al, al (the sum)
        .label("sum")
        .op(&[0x26, 0x02, 0x05]) // add al, [es:di]
        .op(&[0x47]) // inc di
        .rel8(0xe2, "sum") // loop sum
        .op(&[0x84, 0xc0]) // test al, al
        .rel8(0x74, "found") // jz found
        .label("next")
        .op(&[0x43]) // inc bx
        .rel8(0x75, "scan") // jnz scan (bx wraps after 0xffff)
        .mov_si("none")
        .call("puts")
        .rel8(0xeb, "halt") // jmp halt
        .label("found")
        .mov_si("ibft")
        .call("puts")
        .op(&[0x26, 0x8b, 0x0e, 0x04, 0x00]) // mov cx, [es:4]
        .op(&[0x31, 0xff]) // xor di, di
        .label("dump")
        .op(&[0x26, 0x8a, 0x05]) // mov al, [es:di]
        .call("puthex")
        .op(&[0x47]) // inc di
        .rel8(0xe2, "dump") // loop dump
        .mov_si("end")
        .call("puts")
        .label("halt")
        .op(&[0xfa]) // cli
        .op(&[0xf4]) // hlt
        .rel8(0xeb, "halt") // jmp halt
        // puts: print the zero-terminated string at ds:si.
        .label("puts")
        .op(&[0xac]) // lodsb
        .op(&[0x84, 0xc0]) // test al, al
        .rel8(0x74, "puts_ret") // jz puts_ret
        .call("putc")
        .rel8(0xeb, "puts") // jmp puts
        .label("puts_ret")
        .op(&[0xc3]) // ret
        // putc: al to COM1's transmit register, once the UART says the
        // register is empty (line status 0x3FD, bit 5), so no byte is
        // overwritten whatever pace the UART keeps.
        .label("putc")
        .op(&[0x52]) // push dx
        .op(&[0x50]) // push ax
        .op(&[0xba, 0xfd, 0x03]) // mov dx, 0x3fd
        .label("thre")
        .op(&[0xec]) // in al, dx
        .op(&[0xa8, 0x20]) // test al, 0x20
        .rel8(0x74, "thre") // jz thre
        .op(&[0x58]) // pop ax
        .op(&[0xba, 0xf8, 0x03]) // mov dx, 0x3f8
        .op(&[0xee]) // out dx, al
        .op(&[0x5a]) // pop dx
        .op(&[0xc3]) // ret
        // puthex: al as two hex digits (falls into nibble for the low one).
        .label("puthex")
        .op(&[0x50]) // push ax
        .op(&[0xc0, 0xe8, 0x04]) // shr al, 4
        .call("nibble")
        .op(&[0x58]) // pop ax
        .label("nibble")
        .op(&[0x24, 0x0f]) // and al, 0x0f
        .op(&[0x04, b'0']) // add al, '0'
        .op(&[0x3c, b'9']) // cmp al, '9'
        .rel8(0x76, "digit") // jbe digit
        .op(&[0x04, 0x07]) // add al, 7 ('A'..'F')
        .label("digit")
        .rel8(0xeb, "putc") // jmp putc (its ret returns to our caller)
        .string("marker", &format!("\r\n{MARKER}\r\n"))
        .string("none", &format!("{NO_IBFT}\r\n"))
        .string("ibft", IBFT_PREFIX)
        .string("end", &format!("\r\n{END}\r\n"));
    let code = a.finish();
    assert!(
        code.len() <= 510,
        "boot sector code is {} bytes",
        code.len()
    );
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sector_is_bootable_and_holds_no_signature_text() {
        let s = sector();
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        // The signature appears once, as the cmp immediate, and not on a
        // 16-byte boundary the scan would look at (the code sits at 0x7c00).
        let hits: Vec<usize> = s
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"iBFT")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_ne!(hits[0] % 16, 0);
        let text = String::from_utf8_lossy(&s);
        assert!(text.contains(MARKER));
    }
}
