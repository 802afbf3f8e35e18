"""The kernel log of a synthetic machine: boot-like records ending in the panic, in the lockless ring buffer.

:func:`make_records` writes a few dozen plausible lines (version banner, e820 map, memory, CPUs, systemd, a
device), one with hostile markup, one record of two lines (an embedded newline), then the crash: ``sysrq: Trigger
a crash``, ``Kernel panic - not syncing: sysrq triggered crash``, the ``CPU: ... Comm: bash`` line and the call
trace of the crashed task.

:func:`write_printk` stores them the way Linux 5.10+ does (``kernel/printk/printk_ringbuffer.c``): a
descriptor ring (``prb_desc``: ``state_var`` = state << 62 | id, the text block's logical positions) and an
info array (``printk_info``: seq, ts_nsec, text_len, facility, flags:5, level:3, caller_id, dev_info) beside a
data ring whose blocks are ``[unsigned long id][text]``, 8-byte aligned. Ids and logical positions start where a
freshly booted kernel's do (``DESC0_ID``, ``BLK0_LPOS``), so readers meet the wrap-around arithmetic.

>>> records = make_records(osrelease="6.1.0-synth", hostname="synth", nr_cpus=2, panic_cpu=1, pid=4242,
...                        comm="bash", backtrace=[("panic", 0x20, 0x40)], uptime_ns=4000 * 10**9, memory=256 << 20)
>>> [r.text for r in records if r.level == 0]
['Kernel panic - not syncing: sysrq triggered crash']
>>> records[-1].text
' </TASK>'
"""

from __future__ import annotations

from dataclasses import dataclass

from kdumplab.testing.synth_memory import KernelMemory

HOSTILE_TEXT = 'audit: type=1400 audit(1700000000.123:42): apparmor="DENIED" name="<script>alert(1)</script>" comm="&amp;"'
PANIC_MESSAGE = "Kernel panic - not syncing: sysrq triggered crash"
#: One printk call that writes two lines is one record whose text holds the newline (init/calibrate.c; seen in
#: Debian 6.1 guests under QEMU): readers must keep it, makedumpfile --dump-dmesg indents the second line.
MULTILINE_TEXT = ("calibrate_delay_direct() failed to get a good estimate for loops_per_jiffy.\n"
                  'Probably due to long platform interrupts. Consider using "lpj=" boot option.')

DESC_SV_BITS = 64
DESC_FLAGS_SHIFT = DESC_SV_BITS - 2
DESC_ID_MASK = (1 << DESC_FLAGS_SHIFT) - 1
DESC_FINALIZED = 2
LOG_NEWLINE = 2


@dataclass(frozen=True)
class Record:
    """One printk record (what ``get_printk_records`` returns, and the manifest's ``dmesg`` keeps ``text``)."""

    text: str
    level: int
    ts_nsec: int
    caller_id: int  # a pid, or 0x80000000 | cpu outside task context
    facility: int = 0
    subsystem: str = ""
    device: str = ""


def make_records(*, osrelease: str, hostname: str, nr_cpus: int, panic_cpu: int, pid: int, comm: str,
                 backtrace: list[tuple[str, int, int]], uptime_ns: int, memory: int) -> list[Record]:
    """The log lines of one boot and crash. ``backtrace`` is ``[(function, offset, size)]``, innermost first."""
    kib = memory >> 10
    boot = [
        f"Linux version {osrelease} (kdumplab@synth) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for "
        f"Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian {osrelease}",
        f"Command line: BOOT_IMAGE=/boot/vmlinuz-{osrelease} root=/dev/vda1 ro quiet crashkernel=256M",
        "x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'",
        "BIOS-provided physical RAM map:",
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009efff] usable",
        "BIOS-e820: [mem 0x0000000000100000-0x00000000bffdffff] usable",
        "NX (Execute Disable) protection: active",
        "DMI: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014",
        "Hypervisor detected: KVM",
        "tsc: Detected 2495.312 MHz processor",
        f"Memory: {kib - kib // 20}K/{kib}K available (16384K kernel code, 2880K rwdata, 11236K rodata)",
        f"SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs={nr_cpus}, Nodes=1",
        "rcu: Preemptible hierarchical RCU implementation.",
        "Console: colour VGA+ 80x25",
        "printk: console [tty0] enabled",
        MULTILINE_TEXT,
        f"smp: Brought up 1 node, {nr_cpus} CPUs",
        "devtmpfs: initialized",
        "NET: Registered PF_NETLINK/PF_ROUTE protocol family",
        "clocksource: Switched to clocksource kvm-clock",
        "Freeing unused kernel image (initmem) memory: 2796K",
        "Run /init as init process",
        "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.",
    ]
    # early boot: the first record at 0, the others milliseconds apart (printk's [    0.144000])
    records = [Record(text, 6, 144_000 * i * i, 0) for i, text in enumerate(boot)]
    t = 2 * 10**9
    for text in ("systemd 252.22-1~deb12u1 running in system mode (+PAM +AUDIT +SELINUX +APPARMOR)",
                 f"Hostname set to <{hostname}>.", "Queued start job for default target graphical.target."):
        records.append(Record(f"systemd[1]: {text}", 6, t, 1, facility=3))
        t += 37_000_000
    records.append(Record("virtio_net virtio0 enp0s3: renamed from eth0", 6, t, 0x80000000 | 0, 0, "virtio",
                          "+virtio:virtio0"))
    records.append(Record(HOSTILE_TEXT, 5, t + 500_000_000, 1))
    records.append(Record("e1000: enp0s3 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: RX", 6,
                          t + 900_000_000, 0x80000000 | (nr_cpus - 1), 0, "pci", "+pci:0000:00:03.0"))
    crash = uptime_ns - 1_000_000
    records.append(Record("sysrq: Trigger a crash", 6, crash, pid))
    records.append(Record(PANIC_MESSAGE, 0, crash + 20_000, pid))
    records.append(Record(f"CPU: {panic_cpu} PID: {pid} Comm: {comm} Not tainted {osrelease} #1 Debian {osrelease}",
                          4, crash + 40_000, pid))
    records.append(Record("Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2 04/01/2014", 4,
                          crash + 50_000, pid))
    records.append(Record("Call Trace:", 4, crash + 60_000, pid))
    # dump_stack() in panic() prints the trace from panic() outwards, then kdump takes over: no more lines
    trace = [f" {name}+{off:#x}/{size:#x}" for name, off, size in backtrace]
    records.append(Record(" <TASK>", 4, crash + 61_000, pid))
    for i, line in enumerate(trace):
        records.append(Record(line, 4, crash + 62_000 + i, pid))
    records.append(Record(" </TASK>", 4, crash + 70_000, pid))
    return records


def write_printk(kmem: KernelMemory, records: list[Record]) -> None:
    """Store ``records`` in ``printk_rb_static`` (descs, infos, ``__log_buf``) and point ``prb`` at it."""
    descs = kmem.sym("_printk_rb_static_descs")
    infos = kmem.sym("_printk_rb_static_infos")
    data = kmem.sym("__log_buf")
    count_bits = (kmem.kernel.symbol("_printk_rb_static_descs").size // kmem.size("prb_desc")).bit_length() - 1
    size_bits = kmem.kernel.symbol("__log_buf").size.bit_length() - 1
    count, size = 1 << count_bits, 1 << size_bits
    if len(records) >= count:
        raise ValueError("too many printk records for the descriptor ring")
    desc_size, info_size = kmem.size("prb_desc"), kmem.size("printk_info")
    first_id = (-count) & DESC_ID_MASK  # DESC0_ID + 1: the first record of a fresh ring
    lpos = (-size) & (2**64 - 1)  # BLK0_LPOS
    ids = []
    for seq, rec in enumerate(records):
        rid = (first_id + seq) & DESC_ID_MASK
        ids.append(rid)
        text = rec.text.encode()
        blk = (8 + len(text) + 7) // 8 * 8
        begin, nxt = lpos, (lpos + blk) & (2**64 - 1)
        if (begin % size) + blk > size:
            raise ValueError("printk records do not fit in __log_buf")
        kmem.write(data + begin % size, rid.to_bytes(8, "little") + text)
        d = descs + (rid % count) * desc_size
        kmem.put(d, "prb_desc", {"state_var.counter": (DESC_FINALIZED << DESC_FLAGS_SHIFT) | rid,
                                 "text_blk_lpos.begin": begin, "text_blk_lpos.next": nxt})
        i = infos + (rid % count) * info_size
        kmem.put(i, "printk_info", {
            "seq": seq, "ts_nsec": rec.ts_nsec, "text_len": len(text), "facility": rec.facility,
            "flags": LOG_NEWLINE, "level": rec.level, "caller_id": rec.caller_id,
            "dev_info.subsystem": rec.subsystem.encode(), "dev_info.device": rec.device.encode(),
        })  # fmt: skip
        lpos = nxt
    rb = kmem.sym("printk_rb_static")
    kmem.put(rb, "printk_ringbuffer", {
        "desc_ring.count_bits": count_bits, "desc_ring.descs": descs, "desc_ring.infos": infos,
        "desc_ring.head_id.counter": ids[-1], "desc_ring.tail_id.counter": ids[0],
        "desc_ring.last_finalized_id.counter": ids[-1],
        "text_data_ring.size_bits": size_bits, "text_data_ring.data": data,
        "text_data_ring.head_lpos.counter": lpos, "text_data_ring.tail_lpos.counter": (-size) & (2**64 - 1),
        "fail.counter": 0,
    })  # fmt: skip
    kmem.write_u64(kmem.sym("prb"), rb)
    kmem.write(kmem.sym("log_buf_len"), size.to_bytes(4, "little"))
    if kmem.kernel.era == "5.10":  # a plain u64 before 5.13
        kmem.write_u64(kmem.sym("clear_seq"), 0)
    else:
        kmem.put(kmem.sym("clear_seq"), "latched_seq", {"val[0]": 0, "val[1]": 0})
