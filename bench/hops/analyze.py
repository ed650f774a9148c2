#!/usr/bin/env python3
"""analyze.py DIR: per-message hop delays from DIR/x.pcap (loopback, Ethernet link type).

Ports: A MQTT 16401, B MQTT 16402, Redis 16379. Redis client ports are mapped to
A or B with DIR/ss.txt (ss -tnp taken during the run).
A bench payload is stamp(16: run u16, pub u16, seq u32, sentNanos u64) + filler
'q','r',... (byte i = 'a'+i%26). Every message is found in every hop's byte
stream by its filler; the key is the stamp's first 8 bytes.
"""
import struct, sys, re, collections, json

D = sys.argv[1]
AP, BP, RP = 16401, 16402, 16379
FILLER = bytes(ord('a') + i % 26 for i in range(16, 48))  # 32 bytes from offset 16: occurs once per 64-byte payload

# ---- map redis client ports to A / B
pids = dict(kv.split('=') for kv in open(f'{D}/pids').read().split())
port_owner = {}
for m in re.finditer(r'127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:%d\s+users:\(\("server",pid=(\d+)' % RP, open(f'{D}/ss.txt').read()):
    port_owner[int(m.group(1))] = 'A' if m.group(2) == pids['a'] else ('B' if m.group(2) == pids['b'] else '?')

# ---- read pcap
segs = collections.defaultdict(list)  # (sport,dport) -> [(seq, ts, payload)]
with open(f'{D}/x.pcap', 'rb') as f:
    gh = f.read(24)
    magic = struct.unpack('<I', gh[:4])[0]
    nano = magic == 0xa1b23c4d
    assert magic in (0xa1b2c3d4, 0xa1b23c4d), hex(magic)
    link = struct.unpack('<I', gh[20:24])[0]
    while True:
        h = f.read(16)
        if len(h) < 16:
            break
        s, us, incl, orig = struct.unpack('<IIII', h)
        pkt = f.read(incl)
        ts = s + us * (1e-9 if nano else 1e-6)
        off = 14 if link == 1 else (16 if link == 113 else 4)
        ip = pkt[off:]
        if ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        tot = struct.unpack('>H', ip[2:4])[0]
        tcp = ip[ihl:tot]
        sp, dp, seq = struct.unpack('>HHI', tcp[:8])
        doff = (tcp[12] >> 4) * 4
        pl = tcp[doff:]
        if pl:
            segs[(sp, dp)].append((seq, ts, pl))


def classify(sp, dp):
    if dp == AP: return 'tool>A'
    if sp == AP: return 'A>tool'
    if dp == BP: return 'tool>B'
    if sp == BP: return 'B>tool'
    if dp == RP: return port_owner.get(sp, '?') + '>R'
    if sp == RP: return 'R>' + port_owner.get(dp, '?')
    return '?'


def reassemble(lst):
    """bytes of the flow in seq order, and [(offset, ts, seglen)] per segment (retransmits dropped)."""
    base = lst[0][0]
    out = bytearray(); marks = []
    seen = set()
    for seq, ts, pl in lst:  # capture order == send order on lo
        rel = (seq - base) & 0xffffffff
        if rel < len(out):  # retransmission / overlap
            continue
        marks.append((len(out), ts, len(pl)))
        out += pl
    return bytes(out), marks


import bisect
# per class: key -> first ts seen ; per class: list of per-segment message counts
first = collections.defaultdict(dict)
batch = collections.defaultdict(collections.Counter)
flowinfo = collections.defaultdict(list)
mqtt_pub = {}   # key -> (flow, packet id, ts)    tool>A
pubacks = collections.defaultdict(lambda: collections.defaultdict(list))  # flow -> pid -> [ts]
run_tags = collections.Counter()
for (sp, dp), lst in segs.items():
    cls = classify(sp, dp)
    data, marks = reassemble(lst)
    starts = [m[0] for m in marks]
    per_seg = collections.Counter()
    n = 0
    for m in re.finditer(re.escape(FILLER), data):
        so = m.start() - 16
        if so < 0:
            continue
        key = data[so:so + 8]
        run_tags[key[:2]] += 1
        i = bisect.bisect_right(starts, so) - 1
        ts = marks[i][1]
        per_seg[i] += 1
        n += 1
        d = first[cls]
        if key not in d:
            d[key] = ts
    if n:
        for i, c in per_seg.items():
            batch[cls][c] += 1
    flowinfo[cls].append(((sp, dp), len(data), n))
    # MQTT packet ids for PUBLISH (tool>A) and PUBACK (A>tool)
    if cls in ('tool>A', 'A>tool'):
        p = 0
        while p + 2 <= len(data):
            t = data[p]
            rl = 0; mul = 1; q = p + 1
            while True:
                b = data[q]; q += 1
                rl += (b & 127) * mul; mul *= 128
                if b < 128: break
            body = data[q:q + rl]
            i = bisect.bisect_right(starts, p) - 1
            ts = marks[i][1]
            if cls == 'tool>A' and t >> 4 == 3:
                qos = (t >> 1) & 3
                tl = struct.unpack('>H', body[:2])[0]
                pid = struct.unpack('>H', body[2 + tl:4 + tl])[0] if qos else 0
                pay = body[2 + tl + (2 if qos else 0):]
                mqtt_pub[pay[:8]] = ((sp, dp), pid, ts, struct.unpack('>q', pay[8:16])[0])
            elif cls == 'A>tool' and t >> 4 == 4:
                pid = struct.unpack('>H', body[:2])[0]
                pubacks[(dp, sp)][pid].append(ts)
            p = q + rl

run = run_tags.most_common(1)[0][0]


def pct(v, ps=(50, 90, 99, 99.9)):
    v = sorted(v)
    if not v: return ['-'] * len(ps)
    return [v[min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1)] for p in ps]


keys = [k for k in first['tool>A'] if k[:2] == run]
hops = collections.OrderedDict()
def add(name, a, b):
    v = [(first[b][k] - first[a][k]) * 1e6 for k in keys if k in first[a] and k in first[b]]
    hops[name] = v
add('1 tool>A  -> A>R (A reads, batches, writes EVALSHA)', 'tool>A', 'A>R')
add('2 A>R     -> R>B (Redis runs script, pushes to B)', 'A>R', 'R>B')
add('3 R>B     -> B>tool (B reads push, delivers, writes PUBLISH)', 'R>B', 'B>tool')
add('total tool>A -> B>tool (on the wire)', 'tool>A', 'B>tool')

# Redis's reply to A's publish connection: the first R>A segment after the A>R write
# that carries each message's batch. Approximated per batch: next R>A segment on the same flow.
a2r_flows = [f for f, _, n in flowinfo['A>R'] if n]
replies = {}
for (sp, dp) in a2r_flows:
    rl = sorted(ts for _, ts, _ in segs[(dp, sp)])
    wl = sorted(set(ts for _, ts, _ in segs[(sp, dp)]))
    for ts in wl:
        j = bisect.bisect_right(rl, ts)
        if j < len(rl):
            replies[ts] = rl[j]
hops['2a A>R     -> R>A reply to the EVALSHA'] = [(replies[first['A>R'][k]] - first['A>R'][k]) * 1e6 for k in keys if k in first['A>R'] and first['A>R'][k] in replies]
hops['2b R>A reply -> R>B push (same script)'] = [(first['R>B'][k] - replies[first['A>R'][k]]) * 1e6 for k in keys if k in first['A>R'] and first['A>R'][k] in replies and k in first['R>B']]

# hop 1 split: the publisher goroutine sends one batch and waits for its reply
# before the next. For a message, the previous write's reply r_prev: if the
# message reached A before r_prev, it waited for the batch in flight.
allw = sorted(set(ts for f in a2r_flows for _, ts, _ in segs[f]))
inflight = []; after = []; idle = []; missed = []; missed_n = collections.Counter(); n_in = 0
for k in keys:
    if k not in first['A>R']: continue
    t0 = first['tool>A'][k]; w = first['A>R'][k]
    i = bisect.bisect_left(allw, w)
    j = i - 1
    wp = allw[j] if j >= 0 else None
    rp = replies.get(wp) if wp is not None else None
    if wp is not None and t0 < wp:
        # reached A before the previous batch was even written, yet not in it:
        # A had not read and queued it by then (reader goroutine not run)
        missed.append((w - t0) * 1e6)
        missed_n[i - bisect.bisect_right(allw, t0)] += 1
    elif rp is not None and t0 < rp <= w:
        n_in += 1
        inflight.append((rp - t0) * 1e6); after.append((w - rp) * 1e6)
    else:
        idle.append((w - t0) * 1e6)
hops['1a  in flight: msg at A -> reply of the batch in flight'] = inflight
hops['1b  ... reply -> this batch written (publisher goroutine wakes)'] = after
hops['1c  nothing in flight: msg at A -> written'] = idle
hops['1d  missed >=1 batch (arrived before prev write): msg -> write'] = missed

# PUBACK: match tool>A PUBLISH with the next PUBACK of its packet id on its connection
ack = []; ackR = []
pend = collections.defaultdict(list)
for k, (fl, pid, ts, sn) in mqtt_pub.items():
    pend[(fl, pid)].append((ts, k))
for (fl, pid), lst in pend.items():
    lst.sort()
    acks = sorted(pubacks[fl][pid])
    j = 0
    for ts, k in lst:
        while j < len(acks) and acks[j] < ts: j += 1
        if j < len(acks):
            ack.append((acks[j] - ts) * 1e6)
            if k in first['A>R'] and first['A>R'][k] in replies:
                ackR.append((acks[j] - replies[first['A>R'][k]]) * 1e6)
            j += 1
hops['ack tool>A -> A>tool PUBACK'] = ack
hops['ack R>A reply -> A>tool PUBACK'] = ackR

# tool side: stamp (SentNanos, tool clock) -> tool>A capture; calibrated by the minimum
offs = [first['tool>A'][k] * 1e9 - mqtt_pub[k][3] for k in keys if k in mqtt_pub]
mo = min(offs)
hops['tool: stamp -> tool>A write (minus min, calibrated)'] = [(o - mo) / 1e3 for o in offs]

print(f'{D}: run tag {run.hex()}, messages in tool>A {len(keys)}')
for cls, fl in sorted(flowinfo.items()):
    withmsg = [x for x in fl if x[2]]
    print(f'  flows {cls:8s}: {len(fl)} ({len(withmsg)} carrying messages, {sum(x[2] for x in fl)} message copies, {sum(x[1] for x in fl)} bytes)')
print(f'{"hop":62s} {"n":>6s} {"p50":>8s} {"p90":>8s} {"p99":>8s} {"p99.9":>8s} {"max":>8s}  (µs)')
res = {}
for name, v in hops.items():
    p = pct(v) + [max(v) if v else '-']
    res[name] = dict(n=len(v), p50=p[0], p90=p[1], p99=p[2], p999=p[3], max=p[4])
    print(f'{name:62s} {len(v):6d} ' + ' '.join(f'{x:8.0f}' if x != '-' else '       -' for x in p))
print(f'hop 1 cases: in flight {n_in}, idle {len(idle)}, missed >=1 batch {len(missed)} of {len(keys)}; batches missed hist {sorted(missed_n.items())[:10]}')
for cls in ('tool>A', 'A>R', 'R>B', 'B>tool'):
    c = batch[cls]
    tot = sum(c.values()); msgs = sum(k * v for k, v in c.items())
    # messages-weighted distribution of batch sizes
    mw = []
    for k, v in c.items(): mw += [k] * (k * v)
    p = pct(mw)
    print(f'messages per captured write {cls:7s}: {tot} writes, mean {msgs / tot:.2f}; per-message weighted p50 {p[0]} p90 {p[1]} p99 {p[2]} p99.9 {p[3]}; max {max(c)}; hist {sorted(c.items())[:12]}')
# percentage of the total's tail: for messages with total above its p99, mean of each hop
tot = {k: (first['B>tool'][k] - first['tool>A'][k]) * 1e6 for k in keys if k in first['B>tool'] and k in first['A>R'] and k in first['R>B']}
thr = pct(list(tot.values()))[2]; thr90 = pct(list(tot.values()))[1]
for lab, lo, hi in (('total <= p90', -1, thr90), ('p90 < total <= p99', thr90, thr), ('total > p99', thr, 1e18)):
    ks = [k for k, t in tot.items() if lo < t <= hi]
    if not ks: continue
    h1 = sum((first['A>R'][k] - first['tool>A'][k]) * 1e6 for k in ks) / len(ks)
    h2 = sum((first['R>B'][k] - first['A>R'][k]) * 1e6 for k in ks) / len(ks)
    h3 = sum((first['B>tool'][k] - first['R>B'][k]) * 1e6 for k in ks) / len(ks)
    print(f'  {lab:20s} n={len(ks):6d}: mean hop1 {h1:7.0f}  hop2 {h2:7.0f}  hop3 {h3:7.0f}  total {h1 + h2 + h3:7.0f} µs')
case = {}
for k in keys:
    pass
json.dump(res, open(f'{D}/hops.json', 'w'), indent=1)
# per-message timeline for further study
with open(f'{D}/per_msg.tsv', 'w') as f:
    f.write('pub\tseq\ttoolA\tAR\tRB\tBtool\n')
    for k in keys:
        f.write('%d\t%d\t' % struct.unpack('>HI', k[2:8]) + '\t'.join('%.6f' % first[c][k] if k in first[c] else '' for c in ('tool>A', 'A>R', 'R>B', 'B>tool')) + '\n')
