#!/usr/bin/env python3
"""Soak `alertclip run` against hostile RTSP servers and watch its memory.

Starts one RTSP server per hostile kind on free loopback ports (garbage, bogus SDP, huge
headers, huge Content-Length, stalls, resets, RTP with garbage or oversized interleaved frames
...), plus a good camera: a small RTSP/TCP server in this script that loops an H.264 file made
with ffmpeg (or gst-launch-1.0), packetized as RTP (single NAL / FU-A). It writes a config
(temporary state dirs, no [mqtt]) with the good camera and every hostile one, runs a copy of
the release binary, and samples the daemon's VmRSS, thread count and open fds every
--interval seconds. A baseline daemon with the good camera alone runs at the same time (its
own good server), unless --only says otherwise. At the end it prints both series, the growth
per minute and each camera's state and last error from `alertclip status`.

Standard library only (python3.11 on Debian 12).

  scripts/soak-hostile-cameras.py                      # 600 s, all kinds, plus baseline
  scripts/soak-hostile-cameras.py --seconds 180 --kinds stall,huge-length --only hostile
  scripts/soak-hostile-cameras.py --list-kinds
  scripts/soak-hostile-cameras.py --seconds 300 --only hostile \
      --wrap 'heaptrack -o /tmp/soak/ht'              # then heaptrack_print /tmp/soak/ht*.zst

Everything goes to a fresh directory under --workdir (default /tmp/soak): the binary copy,
configs, daemon logs, samples.csv.
"""

import argparse
import base64
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

FPS = 15
MTU = 1400

# ----------------------------------------------------------------------------------------
# RTSP plumbing shared by the servers


class Conn:
    """One accepted connection: reads RTSP requests and interleaved frames, writes under a lock."""

    def __init__(self, sock, server):
        self.sock = sock
        self.server = server
        self.buf = b""
        self.lock = threading.Lock()
        self.closed = False
        self.session = "%08x" % random.getrandbits(32)
        self.playing = threading.Event()

    def send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("client closed")
        self.buf += chunk

    def read_request(self):
        """The next RTSP request as (method, url, headers, body); interleaved frames are skipped."""
        while True:
            while not self.buf:
                self._fill()
            if self.buf[:1] == b"$":
                while len(self.buf) < 4:
                    self._fill()
                n = struct.unpack(">H", self.buf[2:4])[0]
                while len(self.buf) < 4 + n:
                    self._fill()
                self.buf = self.buf[4 + n:]
                continue
            while b"\r\n\r\n" not in self.buf:
                if len(self.buf) > 1 << 20:
                    raise ConnectionError("request too long")
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            method = parts[0]
            url = parts[1] if len(parts) > 1 else ""
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0") or 0)
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
            return method, url, headers, body

    def reply(self, headers, code="200 OK", extra=None, body=b""):
        out = "RTSP/1.0 %s\r\nCSeq: %s\r\n" % (code, headers.get("cseq", "0"))
        for k, v in (extra or []):
            out += "%s: %s\r\n" % (k, v)
        if body:
            out += "Content-Length: %d\r\n" % len(body)
        out += "\r\n"
        self.send(out.encode("latin-1") + body)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def sdp_for(port, sprop=None):
    fmtp = "packetization-mode=1;profile-level-id=42c01e"
    if sprop:
        fmtp += ";sprop-parameter-sets=" + sprop
    return (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=alertclip soak\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "a=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 %s\r\na=control:trackID=0\r\n" % fmtp
    ).encode()


def serve_session(conn, sdp, on_play):
    """Answers OPTIONS/DESCRIBE/SETUP/PLAY/... properly; calls on_play(conn) in a thread at PLAY."""
    while True:
        method, url, h, _ = conn.read_request()
        if method == "OPTIONS":
            conn.reply(h, extra=[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER")])
        elif method == "DESCRIBE":
            base = url if url.endswith("/") else url + "/"
            conn.reply(h, extra=[("Content-Type", "application/sdp"), ("Content-Base", base)], body=sdp)
        elif method == "SETUP":
            transport = h.get("transport", "")
            m = re.search(r"interleaved=(\d+)-(\d+)", transport)
            inter = m.group(0) if m else "interleaved=0-1"
            conn.reply(h, extra=[("Transport", "RTP/AVP/TCP;unicast;" + inter),
                                 ("Session", conn.session + ";timeout=60")])
        elif method == "PLAY":
            conn.reply(h, extra=[("Session", conn.session), ("Range", "npt=0.000-")])
            if not conn.playing.is_set():
                conn.playing.set()
                threading.Thread(target=_guarded, args=(on_play, conn), daemon=True).start()
        elif method == "TEARDOWN":
            conn.reply(h, extra=[("Session", conn.session)])
            return
        else:  # GET_PARAMETER, SET_PARAMETER keep-alives, anything else
            conn.reply(h, extra=[("Session", conn.session)])


def _guarded(fn, conn):
    try:
        fn(conn)
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()


def rtp_header(seq, ts, marker=False, pt=96, ssrc=0x50AC0001):
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)


def interleaved(channel, payload):
    return b"$" + bytes([channel]) + struct.pack(">H", len(payload)) + payload


# ----------------------------------------------------------------------------------------
# The good camera: an H.264 Annex B file looped as RTP over RTSP/TCP


def make_h264(path, seconds=10):
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return
    tmp = path + ".part"
    if shutil.which("ffmpeg"):
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
               "testsrc=size=320x240:rate=%d" % FPS, "-t", str(seconds), "-c:v", "libx264",
               "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(FPS), "-bf", "0",
               "-b:v", "400k", "-x264-params", "repeat-headers=1:sliced-threads=0:threads=1",
               "-f", "h264", tmp]
    else:
        cmd = ["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=%d" % (seconds * FPS), "!",
               "video/x-raw,width=320,height=240,framerate=%d/1" % FPS, "!", "x264enc",
               "speed-preset=ultrafast", "tune=zerolatency", "key-int-max=%d" % FPS, "bitrate=400",
               "!", "video/x-h264,stream-format=byte-stream,profile=baseline", "!", "h264parse",
               "config-interval=-1", "!", "filesink", "location=" + tmp]
    subprocess.run(cmd, check=True)
    os.replace(tmp, path)


def load_access_units(path):
    data = open(path, "rb").read()
    nals = [n.lstrip(b"\x00") for n in re.split(b"\x00\x00\x01", data)]
    nals = [n.rstrip(b"\x00") if i < len(nals) - 1 else n for i, n in enumerate(nals)]
    nals = [n for n in nals if n]
    aus, cur, had_vcl = [], [], False
    sps = pps = None
    for n in nals:
        t = n[0] & 0x1F
        if t == 7 and sps is None:
            sps = n
        if t == 8 and pps is None:
            pps = n
        vcl = t in (1, 5)
        starts = t in (7, 9) or (vcl and len(n) > 1 and n[1] & 0x80)
        if had_vcl and starts:
            aus.append(cur)
            cur, had_vcl = [], False
        cur.append(n)
        had_vcl = had_vcl or vcl
    if cur:
        aus.append(cur)
    sprop = None
    if sps and pps:
        sprop = base64.b64encode(sps).decode() + "," + base64.b64encode(pps).decode()
    return aus, sprop


def packetize(nal, seq, ts, last):
    """RTP packets (payloads with header) of one NAL: single NAL unit or FU-A."""
    out = []
    if len(nal) <= MTU:
        out.append(rtp_header(seq, ts, last) + nal)
        return out, seq + 1
    hdr = nal[0]
    fu_ind = (hdr & 0xE0) | 28
    body = nal[1:]
    pos = 0
    while pos < len(body):
        chunk = body[pos:pos + MTU]
        start = pos == 0
        pos += len(chunk)
        end = pos >= len(body)
        fu_hdr = (0x80 if start else 0) | (0x40 if end else 0) | (hdr & 0x1F)
        out.append(rtp_header(seq, ts, last and end) + bytes([fu_ind, fu_hdr]) + chunk)
        seq += 1
    return out, seq


def good_stream(aus):
    def play(conn):
        seq, ts0 = random.getrandbits(16), random.getrandbits(32)
        t0 = time.monotonic()
        i = 0
        while not conn.closed:
            au = aus[i % len(aus)]
            ts = ts0 + i * (90000 // FPS)
            out = []
            for k, nal in enumerate(au):
                pkts, seq = packetize(nal, seq, ts, k == len(au) - 1)
                out.extend(interleaved(0, p) for p in pkts)
            conn.send(b"".join(out))
            i += 1
            delay = t0 + i / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return play


# ----------------------------------------------------------------------------------------
# Hostile kinds: each a handler(conn) run in its connection's thread


def rand(n):
    return os.urandom(n)


def h_garbage(conn):
    """Random bytes from the moment of connecting, 32 KiB/s, never RTSP."""
    while True:
        conn.send(rand(4096))
        time.sleep(0.125)


def h_bogus_sdp(conn):
    """Proper OPTIONS; DESCRIBE answered 200 with a body that is not SDP (and a broken m= line)."""
    while True:
        method, url, h, _ = conn.read_request()
        if method == "DESCRIBE":
            body = (b"v=9\r\nm=video abc RTP/AVP 96 97 98 x\r\na=rtpmap:96 H264\r\na=control:\x01\x02\r\n"
                    b"m=\r\nc=IN IP9 ::::\r\n" + rand(2000).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
            conn.reply(h, extra=[("Content-Type", "application/sdp"), ("Content-Base", url + "/")], body=body)
        elif method == "SETUP":
            conn.reply(h, code="461 Unsupported Transport")
        else:
            conn.reply(h, extra=[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY")])


def h_huge_header(conn):
    """Answers the first request with a 1 MiB header line, then 100 more 64 KiB lines, then stalls."""
    _, _, h, _ = conn.read_request()
    conn.send(b"RTSP/1.0 200 OK\r\nCSeq: " + h.get("cseq", "1").encode() + b"\r\nX-Pad: " + b"A" * (1 << 20) + b"\r\n")
    for i in range(100):
        conn.send(b"X-Pad-%d: " % i + b"B" * 65536 + b"\r\n")
        time.sleep(0.05)
    while conn.sock.recv(65536):  # stalls until the client leaves
        pass


def h_huge_length(conn):
    """Answers with Content-Length: 2000000000, then trickles the body at 256 KiB/s forever."""
    _, _, h, _ = conn.read_request()
    conn.send(b"RTSP/1.0 200 OK\r\nCSeq: " + h.get("cseq", "1").encode() +
              b"\r\nContent-Type: application/sdp\r\nContent-Length: 2000000000\r\n\r\n")
    while True:
        conn.send(b"a=x-pad:" + b"C" * 8183 + b"\r\n")
        time.sleep(8192 / (256 * 1024))


def h_stall(conn):
    """Accepts and reads, never answers."""
    while True:
        if not conn.sock.recv(65536):
            return


def h_close(conn):
    """Closes as soon as it accepts."""
    return


def h_reset(conn):
    """Reads the first request, then resets the connection (RST)."""
    conn.sock.recv(65536)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def h_slow_drip(conn):
    """A correct OPTIONS answer, one byte every 0.5 s; then the same for DESCRIBE."""
    while True:
        _, _, h, _ = conn.read_request()
        msg = b"RTSP/1.0 200 OK\r\nCSeq: " + h.get("cseq", "1").encode() + b"\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n"
        for b in msg:
            conn.send(bytes([b]))
            time.sleep(0.5)


def h_redirect_loop(conn):
    """Every request is redirected (302) to a fresh path on this same server, after 0.2 s
    (rtspsrc follows redirects without a limit: unpaced, this loop burns a core)."""
    while True:
        method, url, h, _ = conn.read_request()
        time.sleep(0.2)
        port = conn.server.port
        conn.reply(h, code="302 Moved Temporarily",
                   extra=[("Location", "rtsp://127.0.0.1:%d/r%d" % (port, random.getrandbits(30)))])


def _after_play(stream):
    def handler(conn):
        serve_session(conn, sdp_for(conn.server.port), stream)
    return handler


def s_rtp_garbage(conn):
    """After PLAY: interleaved frames of random bytes, or RTP headers (pt 96) over random payloads."""
    seq, ts = 0, 0
    while not conn.closed:
        out = []
        for _ in range(20):
            n = random.randint(1, 1500)
            if random.random() < 0.5:
                out.append(interleaved(random.choice((0, 0, 1, 5, 255)), rand(n)))
            else:
                seq += 1
                ts += random.choice((0, 0, 3000, 6000, 123456789))
                out.append(interleaved(0, rtp_header(seq, ts, random.random() < 0.3) + rand(n)))
        conn.send(b"".join(out))
        time.sleep(0.05)


def s_rtp_oversize(conn):
    """After PLAY: 64 KiB interleaved frames (RTP header, random FU-A/STAP-A payload), 20 a second,
    and headers announcing 65535 bytes followed by fewer (the framing desynchronises)."""
    seq, ts = 0, 0
    while not conn.closed:
        seq += 1
        ts += 6000
        kind = random.choice((24, 28, 5, 1))  # STAP-A, FU-A, IDR, slice
        payload = bytes([0x60 | kind, random.getrandbits(8)]) + rand(65535 - 12 - 2)
        if random.random() < 0.1:
            conn.send(b"$\x00\xff\xff" + rtp_header(seq, ts) + rand(1000))
        else:
            conn.send(interleaved(0, rtp_header(seq, ts, True) + payload))
        time.sleep(0.05)


def s_fua_endless(conn):
    """After PLAY: one FU-A start fragment, then middle fragments forever (no end, no marker),
    all at the same timestamp: 1 MiB/s of a NAL that never completes."""
    seq, ts = 0, 90000
    conn.send(interleaved(0, rtp_header(seq, ts) + bytes([0x7C, 0x85]) + rand(MTU)))
    while not conn.closed:
        out = []
        for _ in range(50):
            seq += 1
            out.append(interleaved(0, rtp_header(seq, ts) + bytes([0x7C, 0x05]) + rand(MTU)))
        conn.send(b"".join(out))
        time.sleep(50 * MTU / (1 << 20))


KINDS = {
    "garbage": h_garbage,
    "bogus-sdp": h_bogus_sdp,
    "huge-header": h_huge_header,
    "huge-length": h_huge_length,
    "stall": h_stall,
    "close": h_close,
    "reset": h_reset,
    "slow-drip": h_slow_drip,
    "redirect-loop": h_redirect_loop,
    "rtp-garbage": _after_play(s_rtp_garbage),
    "rtp-oversize": _after_play(s_rtp_oversize),
    "fua-endless": _after_play(s_fua_endless),
}
KIND_DOCS = {
    "garbage": h_garbage.__doc__, "bogus-sdp": h_bogus_sdp.__doc__, "huge-header": h_huge_header.__doc__,
    "huge-length": h_huge_length.__doc__, "stall": h_stall.__doc__, "close": h_close.__doc__,
    "reset": h_reset.__doc__, "slow-drip": h_slow_drip.__doc__, "redirect-loop": h_redirect_loop.__doc__,
    "rtp-garbage": "Proper DESCRIBE/SETUP/PLAY, then " + s_rtp_garbage.__doc__.split(": ", 1)[1],
    "rtp-oversize": "Proper DESCRIBE/SETUP/PLAY, then " + s_rtp_oversize.__doc__.split(": ", 1)[1],
    "fua-endless": "Proper DESCRIBE/SETUP/PLAY, then " + s_fua_endless.__doc__.split(": ", 1)[1],
}


class Server:
    """A threaded TCP server on a free loopback port, one handler thread per connection."""

    def __init__(self, name, handler):
        self.name = name
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.active = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="srv-" + name).start()

    def url(self):
        return "rtsp://127.0.0.1:%d/%s" % (self.port, self.name)

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self.active += 1
            threading.Thread(target=self._run, args=(Conn(sock, self),), daemon=True).start()

    def _run(self, conn):
        try:
            self.handler(conn)
        except (OSError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            conn.close()  # a streaming thread, if any, ends on its next send
            with self._lock:
                self.active -= 1


# ----------------------------------------------------------------------------------------
# The daemons


def write_config(d, cameras, stall):
    os.makedirs(d, exist_ok=True)
    text = (
        '[site]\nid = "soak"\nname = "Soak test"\n\n'
        '[storage]\ndir = "%s/clips"\n\n[control]\nsocket = "%s/c.sock"\n\n'
        '[evidence]\ndir = "%s/evidence"\n\n[outbox]\ndir = "%s/outbox"\n\n'
        '[log]\nlevel = "info"\n' % (d, d, d, d)
    )
    for cid, url in cameras:
        text += '\n[[camera]]\nid = "%s"\nurl = "%s"\ntransport = "tcp"\npre_roll = "10s"\nstall_timeout = "%s"\n' % (cid, url, stall)
    path = os.path.join(d, "alertclip.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def descendants(pid):
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        for c in kids.get(q, []):
            out.append(c)
            todo.append(c)
    return out


class Daemon:
    def __init__(self, label, binary, config, wrap, workdir):
        self.label = label
        self.binary = binary
        self.config = config
        self.log_path = os.path.join(workdir, "%s.log" % label)
        self.log = open(self.log_path, "wb")
        cmd = (shlex.split(wrap) if wrap else []) + [binary, "run", "--config", config]
        env = dict(os.environ, RUST_LOG=os.environ.get("SOAK_RUST_LOG", "info"))
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        if wrap:  # the daemon is the deepest descendant running our config
            deadline = time.time() + 30
            while time.time() < deadline:
                found = [p for p in descendants(self.proc.pid) if self._is_daemon(p)]
                if found:
                    self.pid = found[-1]
                    break
                time.sleep(0.2)
        self.samples = []

    def _is_daemon(self, pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
            return self.config.encode() in args and os.path.basename(args[0]) != b"heaptrack"
        except OSError:
            return False

    def sample(self, t):
        row = {"t": t, "rss_kb": None, "hwm_kb": None, "threads": None, "fds": None}
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k == "VmRSS":
                        row["rss_kb"] = int(v.split()[0])
                    elif k == "VmHWM":
                        row["hwm_kb"] = int(v.split()[0])
                    elif k == "Threads":
                        row["threads"] = int(v)
            row["fds"] = len(os.listdir("/proc/%d/fd" % self.pid))
        except OSError:
            pass
        row["abandoned"] = self.count("did not stop in time")
        row["ended"] = self.count("camera connection ended")
        # Connections the daemon holds open to each hostile server right now.
        row["open"] = {k: srv.active for k, srv in getattr(self, "servers", {}).items()}
        self.samples.append(row)
        return row

    def count(self, needle):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().count(needle.encode())
        except OSError:
            return 0

    def status(self):
        try:
            out = subprocess.run([self.binary, "status", "--json", "--config", self.config],
                                 capture_output=True, timeout=10)
            return json.loads(out.stdout)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            return None

    def stop(self):
        t = time.time()
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # The daemon alone first, so that a wrapper (heaptrack) can still write its data.
            try:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=120)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            return None
        return time.time() - t


def growth_per_min(samples, after):
    pts = [(s["t"], s["rss_kb"]) for s in samples if s["rss_kb"] is not None and s["t"] >= after]
    if len(pts) < 2:
        return None
    n = len(pts)
    mt = sum(p[0] for p in pts) / n
    mr = sum(p[1] for p in pts) / n
    var = sum((p[0] - mt) ** 2 for p in pts)
    if var == 0:
        return None
    slope = sum((p[0] - mt) * (p[1] - mr) for p in pts) / var  # kB per second
    return slope * 60 / 1024  # MiB per minute


def camera_lines(status):
    if not status:
        return ["    (no status answer)"]
    cams = status.get("cameras") if isinstance(status, dict) else None
    if cams is None:
        return ["    " + json.dumps(status)[:300]]
    lines = []
    items = cams.items() if isinstance(cams, dict) else [(c.get("id", "?"), c) for c in cams]
    for cid, c in items:
        st = c.get("status", c)
        err = (st.get("last_error") or "")[:110]
        lines.append("    %-14s %-10s reconnects=%-4s buffered=%sB  %s" % (
            cid, st.get("state"), st.get("reconnects"), st.get("buffered_bytes"), err))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=600, help="how long each daemon runs (default 600)")
    ap.add_argument("--interval", type=int, default=15, help="seconds between samples (default 15)")
    ap.add_argument("--kinds", default="all", help="comma-separated hostile kinds, or 'all' (see --list-kinds)")
    ap.add_argument("--binary", default="/work/main/target/release/alertclip",
                    help="alertclip binary; copied into the run directory before use")
    ap.add_argument("--only", choices=("both", "hostile", "baseline"), default="both",
                    help="run both daemons at once (default), or one")
    ap.add_argument("--stall-timeout", default="2s", help="cameras' stall_timeout (default 2s)")
    ap.add_argument("--wrap", default="", help="prefix for the hostile daemon's command, e.g. 'heaptrack -o FILE'")
    ap.add_argument("--workdir", default="/tmp/soak", help="parent of the run directory (default /tmp/soak)")
    ap.add_argument("--list-kinds", action="store_true")
    a = ap.parse_args()

    if a.list_kinds:
        for k in KINDS:
            print("%-14s %s" % (k, " ".join(KIND_DOCS[k].split())))
        return 0
    kinds = list(KINDS) if a.kinds == "all" else [k.strip() for k in a.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        ap.error("unknown kinds: %s (known: %s)" % (", ".join(bad), ", ".join(KINDS)))

    run = os.path.join(a.workdir, time.strftime("run-%Y%m%d-%H%M%S-") + str(os.getpid()))
    os.makedirs(run)
    binary = os.path.join(run, "alertclip")
    shutil.copy2(a.binary, binary)
    h264 = os.path.join(a.workdir, "good-320x240-15fps.h264")
    make_h264(h264)
    aus, sprop = load_access_units(h264)
    good_handler = lambda conn: serve_session(conn, sdp_for(conn.server.port, sprop), good_stream(aus))

    print("run directory %s; %d access units in the good stream; %d s per daemon" % (run, len(aus), a.seconds))
    daemons = []
    servers = {}
    if a.only in ("both", "hostile"):
        good = Server("good", good_handler)
        cams = [("good", good.url())]
        for k in kinds:
            servers[k] = Server(k, KINDS[k])
            cams.append((k, servers[k].url()))
        cfg = write_config(os.path.join(run, "hostile"), cams, a.stall_timeout)
        for cid, url in cams:
            print("  hostile daemon camera %-14s %s" % (cid, url))
        daemons.append(Daemon("hostile", binary, cfg, a.wrap, run))
        daemons[-1].servers = servers
    if a.only in ("both", "baseline"):
        good_b = Server("good", good_handler)
        cfg = write_config(os.path.join(run, "baseline"), [("good", good_b.url())], a.stall_timeout)
        print("  baseline daemon camera good           %s" % good_b.url())
        daemons.append(Daemon("baseline", binary, cfg, "", run))

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        return soak(a, run, daemons, servers)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                try:
                    os.killpg(d.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def soak(a, run, daemons, servers):
    csv = open(os.path.join(run, "samples.csv"), "w")
    csv.write("daemon,t_s,rss_kb,hwm_kb,threads,fds,abandoned_teardowns,connections_ended,open_connections_by_kind\n")
    start = time.monotonic()
    try:
        while True:
            t = round(time.monotonic() - start)
            line = []
            for d in daemons:
                s = d.sample(t)
                csv.write("%s,%d,%s,%s,%s,%s,%d,%d,%s\n" % (
                    d.label, t, s["rss_kb"], s["hwm_kb"], s["threads"], s["fds"], s["abandoned"], s["ended"],
                    " ".join("%s=%d" % kv for kv in s["open"].items() if kv[1])))
                line.append("%s rss=%sMB thr=%s fds=%s aband=%d%s" % (
                    d.label, None if s["rss_kb"] is None else round(s["rss_kb"] / 1024, 1),
                    s["threads"], s["fds"], s["abandoned"],
                    "".join(" %s:%d" % kv for kv in s["open"].items() if kv[1])))
            csv.flush()
            print("t=%4ds  %s" % (t, "   ".join(line)), flush=True)
            if t >= a.seconds or any(d.proc.poll() is not None for d in daemons):
                break
            time.sleep(max(0, start + t + a.interval - time.monotonic()))
    except KeyboardInterrupt:
        pass

    statuses = {d.label: d.status() for d in daemons}
    stops = {d.label: d.stop() for d in daemons}

    print("\n%6s | %s" % ("t (s)", " | ".join("%-36s" % ("%s: RSS MB  threads  fds  abandoned" % d.label) for d in daemons)))
    n = max(len(d.samples) for d in daemons)
    for i in range(n):
        cells, t = [], None
        for d in daemons:
            if i < len(d.samples):
                s = d.samples[i]
                t = s["t"]
                rss = "-" if s["rss_kb"] is None else "%.1f" % (s["rss_kb"] / 1024)
                cells.append("%-36s" % ("%9s %8s %5s %6d" % (rss, s["threads"], s["fds"], s["abandoned"])))
            else:
                cells.append(" " * 36)
        print("%6s | %s" % (t, " | ".join(cells)))
    print()
    for d in daemons:
        g = growth_per_min(d.samples, 60)
        first = next((s for s in d.samples if s["t"] >= 60 and s["rss_kb"]), None)
        last = next((s for s in reversed(d.samples) if s["rss_kb"]), None)
        thr = [s["threads"] for s in d.samples if s["threads"]]
        print("%s: RSS %s -> %s MB (t>=60 s), growth %s MB/min (least squares, t>=60 s); threads %s -> %s (max %s); "
              "fds %s -> %s; abandoned teardowns %d; connections ended %d; exit after SIGTERM %s" % (
                  d.label,
                  first and round(first["rss_kb"] / 1024, 1), last and round(last["rss_kb"] / 1024, 1),
                  "n/a" if g is None else "%+.2f" % g,
                  thr[0] if thr else None, thr[-1] if thr else None, max(thr) if thr else None,
                  d.samples[0]["fds"], d.samples[-1]["fds"],
                  d.samples[-1]["abandoned"], d.samples[-1]["ended"],
                  "timed out (killed)" if stops[d.label] is None else "%.1f s" % stops[d.label]))
        for line in camera_lines(statuses[d.label]):
            print(line)
    if servers:
        print("hostile servers, connections accepted: " +
              ", ".join("%s=%d" % (k, s.connections) for k, s in servers.items()))
        print("hostile servers, connections still open at the end (before SIGTERM): " +
              ", ".join("%s=%d" % kv for kv in daemons[0].samples[-1]["open"].items()))
    print("samples: %s; logs: %s" % (os.path.join(run, "samples.csv"),
                                     ", ".join(d.log_path for d in daemons)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
