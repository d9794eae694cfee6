"""ldapproxy.py: a loopback LDAP proxy that makes slapd answer like Windows.

Active Directory never returns more than MaxValRange (1,500) values of an
attribute at once: asked for "member" of a bigger group it answers
"member;range=0-1499", and the client must ask "member;range=1500-*" (and so
on) until a slice ends with "*". Samba and slapd return every value, so the
tests put this proxy between gatehoused and slapd:

    p = LdapProxy("127.0.0.1", slapd_port)   # p.uri: ldap://127.0.0.1:PORT
    p.fail_ranges = True                      # later slices go unanswered
    p.ad_rootdse = True                       # RootDSE says "I am AD"
    p.rootdse["highestCommittedUSN"] = b"5010"  # more RootDSE attributes
    p.ranged_requests                         # slices asked for so far
    p.raw_guids = True                        # objectGUIDs in raw byte order (as
                                              # keys were before AD's form)
    p.entries_sent                            # searchResEntry messages answered
    p.show_deleted_paged                      # Show Deleted searches with a page control
    p.close()

Deleted objects live under "CN=Deleted Objects" in the tests' slapd, as in
AD; like AD the proxy shows them only to a search that carries the Show
Deleted control (which it takes off: slapd does not know it; other controls,
such as the paged results one, go on to slapd).

Messages are framed by their BER header (tag, length) and only the ones to
rewrite are decoded and encoded again, with pyasn1's LDAPv3 module (Debian's
python3-pyasn1-modules); everything else is forwarded byte for byte.
"""
import re
import socket
import sys
import threading

try:
    from pyasn1.codec.ber import decoder, encoder
    from pyasn1.type import univ
    from pyasn1_modules import rfc2251
except ImportError:  # a Python other than Debian's: use Debian's packages
    sys.path.append("/usr/lib/python3/dist-packages")
    from pyasn1.codec.ber import decoder, encoder
    from pyasn1.type import univ
    from pyasn1_modules import rfc2251

MAX_VAL_RANGE = 1500
AD_CAPABILITY = b"1.2.840.113556.1.4.800"  # LDAP_CAP_ACTIVE_DIRECTORY_OID
SHOW_DELETED = "1.2.840.113556.1.4.417"
PAGED = "1.2.840.113556.1.4.319"
RANGE = re.compile(r"^(member);range=(\d+)-\*$", re.I)


def available():
    return True


def _frame(buf):
    """Length of the first complete BER element of buf, or 0."""
    if len(buf) < 2:
        return 0
    n = buf[1]
    if n < 0x80:
        total = 2 + n
    else:
        k = n & 0x7F
        if len(buf) < 2 + k:
            return 0
        total = 2 + k + int.from_bytes(buf[2:2 + k], "big")
    return total if len(buf) >= total else 0


def _op_tag(msg):
    """(messageID, protocolOp tag byte) read from the BER header."""
    n = msg[1]
    off = 2 + (n & 0x7F if n >= 0x80 else 0)
    idlen = msg[off + 1]
    mid = int.from_bytes(msg[off + 2:off + 2 + idlen], "big", signed=True)
    return mid, msg[off + 2 + idlen]


class _Conn:
    def __init__(self, proxy, client):
        self.p = proxy
        self.client = client
        self.server = socket.create_connection(proxy.target)
        self.ranged = {}  # messageID -> first value wanted
        self.rootdse = set()
        self.show_deleted = set()
        self.lock = threading.Lock()
        for fn in (self.up, self.down):
            threading.Thread(target=fn, daemon=True).start()

    def _pump(self, src, dst, rewrite):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                out = []
                while True:
                    n = _frame(buf)
                    if n == 0:
                        break
                    msg, buf = buf[:n], buf[n:]
                    msg = rewrite(msg)
                    if msg is not None:
                        out.append(msg)
                if out:
                    dst.sendall(b"".join(out))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def up(self):
        self._pump(self.client, self.server, self.request)

    def down(self):
        self._pump(self.server, self.client, self.response)

    def request(self, raw):
        mid, tag = _op_tag(raw)
        if tag != 0x63:  # searchRequest
            return raw
        msg, _ = decoder.decode(raw, asn1Spec=rfc2251.LDAPMessage())
        req = msg["protocolOp"]["searchRequest"]
        ctrls = msg["controls"]
        if ctrls.isValue and any(str(c["controlType"]) == SHOW_DELETED for c in ctrls):
            keep = [c for c in ctrls if str(c["controlType"]) != SHOW_DELETED]
            with self.lock:
                self.show_deleted.add(mid)
                self.p.show_deleted_requests += 1
                if any(str(c["controlType"]) == PAGED for c in keep):
                    self.p.show_deleted_paged += 1
            if keep:
                ctrls.clear()
                for i, c in enumerate(keep):
                    ctrls[i] = c
            else:
                msg["controls"] = univ.noValue
            raw = encoder.encode(msg)
        if str(req["baseObject"]) == "" and int(req["scope"]) == 0:
            with self.lock:
                self.rootdse.add(mid)
            return raw
        attrs = [str(a) for a in req["attributes"]]
        for i, a in enumerate(attrs):
            m = RANGE.match(a)
            if m:
                with self.lock:
                    self.ranged[mid] = int(m.group(2))
                    self.p.ranged_requests += 1
                req["attributes"][i] = m.group(1)  # slapd knows no ranges
                return encoder.encode(msg)
        return raw

    def response(self, raw):
        mid, tag = _op_tag(raw)
        if tag != 0x64:  # only searchResEntry is rewritten
            if tag == 0x65:
                with self.lock:
                    self.ranged.pop(mid, None)
                    self.rootdse.discard(mid)
                    self.show_deleted.discard(mid)
            return raw
        with self.lock:
            low = self.ranged.get(mid)
            rootdse = mid in self.rootdse
            show_deleted = mid in self.show_deleted
        with self.lock:
            self.p.entries_sent += 1
        deleted = b"eleted Objects" in raw or b"eleted objects" in raw
        raw_guids = self.p.raw_guids and b"objectGUID" in raw
        if low is None and not rootdse and b"member" not in raw and not deleted \
                and not raw_guids:
            return raw
        msg, _ = decoder.decode(raw, asn1Spec=rfc2251.LDAPMessage())
        entry = msg["protocolOp"]["searchResEntry"]
        if not show_deleted and "cn=deleted objects," in str(entry["objectName"]).lower():
            with self.lock:
                self.p.entries_sent -= 1  # never sent
            return None
        attrs = entry["attributes"]
        changed = False
        if raw_guids:
            for pa in attrs:
                if str(pa["type"]).lower() == "objectguid":
                    b = bytes(pa["vals"][0])
                    pa["vals"][0] = b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:]
                    changed = True
        if rootdse:
            extra = dict(self.p.rootdse)
            if self.p.ad_rootdse:
                extra["supportedCapabilities"] = AD_CAPABILITY
            for name, value in extra.items():
                pa = attrs[len(attrs)]  # appends a component
                pa["type"] = name
                pa["vals"][0] = value
            return encoder.encode(msg)
        for pa in attrs:
            if str(pa["type"]).lower() != "member":
                continue
            vals = [bytes(v) for v in pa["vals"]]
            start = low or 0
            if low is not None and self.p.fail_ranges:
                return None  # the entry never comes: an incomplete answer
            if low is None and len(vals) <= MAX_VAL_RANGE:
                break
            part = vals[start:start + MAX_VAL_RANGE]
            last = start + MAX_VAL_RANGE >= len(vals)
            pa["type"] = "member;range=%d-%s" % (start, "*" if last else
                                                 str(start + len(part) - 1))
            pa["vals"].clear()
            for i, v in enumerate(part):
                pa["vals"][i] = v
            return encoder.encode(msg)
        return encoder.encode(msg) if changed else raw


class LdapProxy:
    def __init__(self, host, port):
        self.target = (host, port)
        self.fail_ranges = False
        self.ad_rootdse = False
        self.rootdse = {}
        self.ranged_requests = 0
        self.show_deleted_requests = 0
        self.show_deleted_paged = 0
        self.entries_sent = 0
        self.raw_guids = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.uri = "ldap://127.0.0.1:%d" % self.port
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                _Conn(self, c)
            except OSError:
                c.close()

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
