"""The isolation controller: an os-ken OpenFlow 1.3 learning switch that enforces host blocks, plus the HTTP
isolation API (:mod:`sdn.api`) and the durable block store, in one process.

    python -m sdn.controller --config controller.toml

Config (TOML; every listen address explicit, loopback by default)::

    [openflow]  host = "127.0.0.1"   port = 6653
    [api]       host = "127.0.0.1"   port = 8470
    [store]     path = "isolation-blocks.sqlite"
    [timers]    expire_every = 1.0   reconcile_every = 5.0   (seconds)
    [api]       tokens = "tokens.json"   (gateway tokens, python -m sdn.auth; required unless auth = "none")
    [api]       auth = "tokens" (default) | "none" (loopback only: no authentication, a warning at start)
    [api]       certfile = "api.pem"   keyfile = "api.key"   (TLS; required when host is not loopback)
    [api]       client_ca = "gateways-ca.pem"   (optional: gateways must also present a certificate it signed)
    [safety]    allowlist = ["10.77.0.254", "192.168.0.0/24"]   max_per_minute = 30   max_blocked_share = 0.25
                own_addresses = ["192.168.0.2"]   (besides the listen addresses, never blocked)

A block installs, on every connected switch, drop rules at priority 60000 for the address as IPv4/IPv6 source and
destination and for ARP from and to it, then waits for the switch's barrier reply before the API call returns.
The rules have no switch-side timeout (OpenFlow caps ``hard_timeout`` at 65,535 s, so a longer TTL would lapse on
the switch while the store still listed it): the controller's own timer lifts expired blocks, and every
``reconcile_every`` seconds reads the drop rules each switch holds (flow stats by cookie) and puts back those of
any active block a connected switch lacks. The controller records which switch holds which block (confirmed by a
barrier after the rules, or read by that audit), forgets a switch's record when it disconnects and re-installs
every block when it connects; ``GET /blocks`` reports that record per block (``switches``, ``enforced``).
The store makes blocks survive a controller restart. os-ken 4.x runs on native threads (no eventlet, no
monkey-patching), so the API's threads call the switch directly.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import queue
import signal
import ssl
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, ether_types, packet
from os_ken.ofproto import ofproto_v1_3

log = logging.getLogger("sdn.controller")
DROP_COOKIE = 0xB07D_EF00_0000_0001
ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
DROP_PRIORITY = 60000
BARRIER_TIMEOUT = 2.0
IPV4_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
IPV6_FIELDS = {"ipv6_src", "ipv6_dst"}
MATCH_FIELDS = (*sorted(IPV4_FIELDS), *sorted(IPV6_FIELDS))


def drop_matches(parser, ip: str) -> list:
    """OpenFlow matches for everything from and to ``ip`` (and its ARP, for IPv4)."""
    if ipaddress.ip_address(ip).version == 6:
        return [parser.OFPMatch(eth_type=0x86DD, ipv6_src=ip), parser.OFPMatch(eth_type=0x86DD, ipv6_dst=ip)]
    return [parser.OFPMatch(eth_type=0x0800, ipv4_src=ip), parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip),
            parser.OFPMatch(eth_type=0x0806, arp_spa=ip), parser.OFPMatch(eth_type=0x0806, arp_tpa=ip)]  # fmt: skip


class IsolationSwitch(app_manager.OSKenApp):
    """Learning switch + the rule backend of :class:`sdn.isolation.IsolationService`."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.datapaths: dict[int, object] = {}
        self.mac_to_port: dict[int, dict[str, int]] = {}
        self.hosts_seen: set[str] = set()
        self.held: dict[int, set[str]] = {}  # switch -> addresses whose drop rules it confirmed
        self.lock = threading.Lock()
        self.service = None  # set by start(); used to re-install blocks when a switch connects

    # ---- switch life cycle and learning ----------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev) -> None:
        dp = ev.msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=0, match=parser.OFPMatch(),
                                      instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state(self, ev) -> None:
        dp = ev.datapath
        with self.lock:
            if ev.state == MAIN_DISPATCHER:
                self.datapaths[dp.id] = dp
                self.held[dp.id] = set()  # a new connection: what it holds is unknown until re-installed
            elif dp.id is not None and self.datapaths.get(dp.id) is dp:
                del self.datapaths[dp.id]
                self.held.pop(dp.id, None)
        if ev.state == MAIN_DISPATCHER and self.service is not None:
            # never wait for a barrier inside an event handler: re-install from another thread
            threading.Thread(target=self._reinstall, args=(dp.id,), daemon=True).start()
        log.info("switch %s %s", dp.id, "connected" if ev.state == MAIN_DISPATCHER else "gone")

    def _reinstall(self, dpid: int) -> None:
        try:
            count = self.service.reinstall()
            log.info("switch %s: %d block(s) re-installed", dpid, count)
        except Exception as err:  # the switch left again: its next connection retries
            log.warning("switch %s: re-installing blocks failed: %s", dpid, err)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev) -> None:
        msg = ev.msg
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        in_port = msg.match["in_port"]
        frame = packet.Packet(msg.data)
        eth = frame.get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        with self.lock:
            self.hosts_seen.add(eth.src)
            table = self.mac_to_port.setdefault(dp.id, {})
            table[eth.src] = in_port
            out_port = table.get(eth.dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            match = parser.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src)
            dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=1, match=match, idle_timeout=300,
                                          instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                                                     actions)]))  # fmt: skip
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id, in_port=in_port, actions=actions,
                                        data=data))  # fmt: skip

    # ---- the rule backend ------------------------------------------------------------------------------
    def _switches(self) -> list:
        with self.lock:
            return list(self.datapaths.values())

    def install(self, ip: str, ttl: float | None) -> None:
        switches = self._switches()
        if not switches:
            raise ConnectionError("no switch is connected")
        for dp in switches:  # no hard_timeout: the controller's timer lifts the block (see the module docstring)
            parser = dp.ofproto_parser
            for match in drop_matches(parser, ip):
                dp.send_msg(parser.OFPFlowMod(datapath=dp, cookie=DROP_COOKIE, priority=DROP_PRIORITY, match=match,
                                              instructions=[]))  # fmt: skip
        for dp in switches:
            self.barrier(dp)
            with self.lock:
                if dp.id in self.held:
                    self.held[dp.id].add(ip)

    def remove(self, ip: str) -> None:
        switches = self._switches()
        for dp in switches:
            parser, ofp = dp.ofproto_parser, dp.ofproto
            for match in drop_matches(parser, ip):
                dp.send_msg(parser.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
                                              out_group=ofp.OFPG_ANY, match=match, cookie=DROP_COOKIE,
                                              cookie_mask=ALL_BITS))  # fmt: skip
        for dp in switches:
            self.barrier(dp)
            with self.lock:
                self.held.get(dp.id, set()).discard(ip)

    def audit(self, timeout: float = BARRIER_TIMEOUT) -> int:
        """Read the drop rules every connected switch holds (a flow-stats request by cookie) into the record that
        ``held_by`` and ``GET /blocks`` report; returns how many switches answered."""
        from os_ken.app.ofctl import event as ofctl_event

        answered = 0
        for dp in self._switches():
            parser, ofp = dp.ofproto_parser, dp.ofproto
            msg = parser.OFPFlowStatsRequest(dp, table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                                             cookie=DROP_COOKIE, cookie_mask=ALL_BITS, match=parser.OFPMatch())
            request = ofctl_event.SendMsgRequest(msg=msg, reply_cls=parser.OFPFlowStatsReply, reply_multi=True)
            request.sync, request.reply_q = True, queue.Queue()
            self.send_event("ofctl_service", request)
            try:
                replies = request.reply_q.get(timeout=timeout)()
            except queue.Empty:
                log.warning("switch %s: no flow-stats reply within %s s", dp.id, timeout)
                continue
            fields: dict[str, set[str]] = {}
            for reply in replies:
                for stat in reply.body:
                    if stat.priority != DROP_PRIORITY:
                        continue
                    for name in MATCH_FIELDS:
                        if name in stat.match:
                            fields.setdefault(str(stat.match[name]), set()).add(name)
            held = {ip for ip, names in fields.items()
                    if names >= (IPV6_FIELDS if ":" in ip else IPV4_FIELDS)}  # fmt: skip
            with self.lock:
                if self.datapaths.get(dp.id) is dp:
                    self.held[dp.id] = held
            answered += 1
        return answered

    def held_by(self, ip: str) -> list[int]:
        """The connected switches that confirmed ``ip``'s drop rules."""
        with self.lock:
            return sorted(dpid for dpid, ips in self.held.items() if ip in ips)

    def held_everywhere(self, ip: str) -> bool:
        """Whether at least one switch is connected and every connected switch holds ``ip``'s rules."""
        with self.lock:
            return bool(self.datapaths) and all(ip in self.held.get(dpid, ()) for dpid in self.datapaths)

    def known_hosts(self) -> int:
        with self.lock:
            return len(self.hosts_seen)

    def barrier(self, dp, timeout: float = BARRIER_TIMEOUT) -> None:
        """Send an OpenFlow barrier and wait for its reply: every earlier message has then been processed."""
        from os_ken.app.ofctl import event as ofctl_event

        request = ofctl_event.SendMsgRequest(msg=dp.ofproto_parser.OFPBarrierRequest(dp),
                                             reply_cls=dp.ofproto_parser.OFPBarrierReply)  # fmt: skip
        request.sync = True
        request.reply_q = queue.Queue()
        self.send_event("ofctl_service", request)
        try:
            request.reply_q.get(timeout=timeout)()
        except queue.Empty:
            raise TimeoutError(f"switch {dp.id}: no barrier reply within {timeout} s") from None


@dataclass
class ControllerConfig:
    openflow_host: str = "127.0.0.1"
    openflow_port: int = 6653
    api_host: str = "127.0.0.1"
    api_port: int = 8470
    store: str = "isolation-blocks.sqlite"
    allowlist: list[str] = field(default_factory=list)
    max_per_minute: int = 30
    max_blocked_share: float = 0.25
    own_addresses: list[str] = field(default_factory=list)
    auth: str = "tokens"
    tokens: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    client_ca: str | None = None
    expire_every: float = 1.0
    reconcile_every: float = 5.0

    def tls(self) -> dict | None:
        """uvicorn's TLS options from ``certfile``, ``keyfile`` and ``client_ca`` (None: plain HTTP)."""
        if not (self.certfile or self.keyfile or self.client_ca):
            return None
        options = {"ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile}
        if self.client_ca:
            options |= {"ssl_ca_certs": self.client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options

    def protected(self) -> list[str]:
        """The controller's own addresses: ``own_addresses`` and the specific listen addresses."""
        listen = [h for h in (self.openflow_host, self.api_host) if h not in ("", "0.0.0.0", "::")]
        return sorted(set(self.own_addresses) | set(listen))

    @classmethod
    def from_toml(cls, path: str | Path) -> "ControllerConfig":
        data = tomllib.loads(Path(path).read_text())
        known = {"openflow", "api", "store", "safety", "timers"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        of, api, store, safety, timers = (data.get(k, {}) for k in ("openflow", "api", "store", "safety", "timers"))
        auth, tokens = api.get("auth", "tokens"), api.get("tokens")
        if auth not in ("tokens", "none"):
            raise ValueError(f'{path}: [api] auth must be "tokens" or "none", got {auth!r}')
        if auth == "tokens" and not tokens:
            raise ValueError(f'{path}: [api] tokens = "FILE" is required (make one with python -m sdn.auth add); '
                             'on loopback, auth = "none" turns authentication off')  # fmt: skip
        if auth == "none" and tokens:
            raise ValueError(f'{path}: [api] auth = "none" and a tokens file contradict each other; drop one')
        from sdn.api import is_loopback

        host = str(api.get("host", "127.0.0.1"))
        if not is_loopback(host) and (auth == "none" or not (api.get("certfile") and api.get("keyfile"))):
            raise ValueError(f"{path}: [api] host {host!r} is beyond loopback: it needs tokens and TLS (certfile and "
                             "keyfile)")  # fmt: skip
        for name in ("expire_every", "reconcile_every"):
            value = timers.get(name, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
                raise ValueError(f"{path}: [timers] {name} must be a number of seconds in (0, 86400), got {value!r}")
        return cls(openflow_host=of.get("host", "127.0.0.1"), openflow_port=int(of.get("port", 6653)),
                   api_host=api.get("host", "127.0.0.1"), api_port=int(api.get("port", 8470)),
                   store=str(store.get("path", "isolation-blocks.sqlite")), allowlist=list(safety.get("allowlist", [])),
                   max_per_minute=int(safety.get("max_per_minute", 30)),
                   max_blocked_share=float(safety.get("max_blocked_share", 0.25)),
                   own_addresses=list(safety.get("own_addresses", [])), auth=auth,
                   tokens=None if tokens is None else str(tokens), certfile=api.get("certfile"),
                   keyfile=api.get("keyfile"), client_ca=api.get("client_ca"),
                   expire_every=float(timers.get("expire_every", 1.0)),
                   reconcile_every=float(timers.get("reconcile_every", 5.0)))  # fmt: skip


class Controller:
    """The running controller: os-ken apps on a daemon thread, the API server, the expiry timer."""

    def __init__(self, config: ControllerConfig) -> None:
        from os_ken import cfg

        from sdn.api import IsolationAPI
        from sdn.auth import TokenStore
        from sdn.blocklist import BlockStore
        from sdn.isolation import IsolationService
        from sdn.safety import Allowlist, CircuitBreaker

        self.config = config
        tokens = TokenStore(config.tokens) if config.auth == "tokens" else None  # a bad file: refused before os-ken
        cfg.CONF.set_override("ofp_listen_host", config.openflow_host)
        cfg.CONF.set_override("ofp_tcp_listen_port", config.openflow_port)  # only this port (no 6633 as well)
        self.manager = app_manager.AppManager.get_instance()
        self.manager.load_apps(["sdn.controller", "os_ken.app.ofctl.service"])
        contexts = self.manager.create_contexts()
        ready = threading.Event()

        def run_apps() -> None:
            threads = self.manager.instantiate_apps(**contexts)
            ready.set()
            app_manager.hub.joinall(threads)

        threading.Thread(target=run_apps, name="os-ken", daemon=True).start()  # daemon: the process can exit
        if not ready.wait(10):
            raise RuntimeError("os-ken apps did not start within 10 s")
        self.switch: IsolationSwitch = app_manager.lookup_service_brick("IsolationSwitch")
        self.service = IsolationService(BlockStore(config.store), self.switch, Allowlist(config.allowlist),
                                        CircuitBreaker(config.max_per_minute, config.max_blocked_share),
                                        own_addresses=config.protected())  # fmt: skip
        self.switch.service = self.service
        self.api = IsolationAPI(self.service, config.api_host, config.api_port,
                                health=lambda: {"switches": len(self.switch._switches())},
                                auth=tokens,
                                ssl=config.tls()).start()  # fmt: skip
        self._stop = threading.Event()
        threading.Thread(target=self._expire_loop, name="isolation-expiry", daemon=True).start()
        log.info("controller: OpenFlow on %s:%d, isolation API on %s://%s:%d (%s)", config.openflow_host,
                 config.openflow_port, "https" if self.api.tls else "http", *self.api.address,
                 f"tokens {config.tokens}" if config.auth == "tokens" else "no authentication")  # fmt: skip

    def _expire_loop(self) -> None:
        last_reconcile = time.monotonic()
        while not self._stop.wait(self.config.expire_every):
            for block in self.service.expire():
                log.info("block of %s expired and was lifted", block.ip)
            if time.monotonic() - last_reconcile >= self.config.reconcile_every:
                last_reconcile = time.monotonic()
                if self.switch._switches():
                    self.switch.audit()
                    count = self.service.reconcile()
                    if count:
                        log.info("%d block(s) missing on a switch were installed again", count)

    def stop(self) -> None:
        self._stop.set()
        self.api.stop()
        self.manager.close()
        self.service.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdn.controller", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="TOML file (see the module docstring)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        controller = Controller(ControllerConfig.from_toml(args.config))
    except (OSError, ValueError, tomllib.TOMLDecodeError) as err:
        print(f"error: {err}")
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
