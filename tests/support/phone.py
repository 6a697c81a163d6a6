"""A real SIP softphone for integration tests, built on pyVoIP 1.6.8.

The phone registers with Asterisk over UDP, answers or places one call at a
time, sends a continuous sine tone and measures the audio it receives. pyVoIP
runs its own threads, so every method here is synchronous and bounded by a
deadline; async tests call them through `asyncio.to_thread`::

    phone = Phone("ptest1", "secret", rtp_low=41000, rtp_high=41019)
    await asyncio.to_thread(phone.start)
    try:
        ...  # have Asterisk call PJSIP/ptest1 and bridge it with `listener`
        await asyncio.to_thread(phone.wait_for_call, 10)
        phone.play_tone(1000)
        assert await asyncio.to_thread(listener.heard, 1000) > 0.5
    finally:
        await asyncio.to_thread(phone.stop)

pyVoIP 1.6.8 gets several SIP details wrong against Asterisk; the private
subclasses below correct them where a test would notice (see each class).
The endpoint must not be qualified (`qualify_frequency=0`): pyVoIP cannot
parse OPTIONS and never answers them. Its threads are not daemons, so a test
that starts a phone must stop it, or the test process will not exit.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

# pyVoIP's modules import each other in a cycle that only resolves when its
# VoIP package is imported before SIP.
import pyVoIP.VoIP  # noqa: F401
from pyVoIP import RTP, SIP
from pyVoIP.VoIP.status import PhoneStatus
from pyVoIP.VoIP.VoIP import CallState, VoIPCall, VoIPPhone

from tests.support.audio import from_u8, rms, sine, to_u8, tone_ratio

logger = logging.getLogger(__name__)

# pyVoIP sends and receives 8-bit unsigned PCM at 8 kHz in 20 ms packets.
FRAME_BYTES = 160
SILENCE = b"\x80"
# How long pyVoIP may wait for Asterisk to answer a REGISTER; its default of
# 30 s would also apply to the unregister done by stop().
SIP_ANSWER_TIMEOUT = 3
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.01
# Received audio kept for measurements; older frames are dropped.
KEEP_SECONDS = 30
# The codecs the phone accepts: pyVoIP 1.6.8 encodes PCMA with the PCMU
# encoder, so only PCMU (and DTMF events) can be sent correctly.
USABLE_CODECS = (RTP.PayloadType.PCMU, RTP.PayloadType.EVENT)


class PhoneError(Exception):
    """The phone could not do what a test asked within its deadline."""


def free_udp_port(host: str) -> int:
    """A UDP port on `host` that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class _Receiver(RTP.RTPPacketManager):
    """Takes the place of an RTP client's receive buffer.

    pyVoIP files received audio by RTP timestamp and hands it out only as it
    is read, so a reader that starts late gets old audio. This keeps frames
    with their arrival time instead, so that a measurement covers exactly
    the seconds it was asked for.
    """

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[tuple[float, bytes]] = deque(
            maxlen=KEEP_SECONDS * 1000 // 20
        )
        self._frames_lock = threading.Lock()

    def write(self, offset: int, data: bytes) -> None:
        with self._frames_lock:
            self._frames.append((time.monotonic(), data))

    def read(self, length: int = FRAME_BYTES) -> bytes:
        return SILENCE * length

    def between(self, start: float, end: float) -> bytes:
        """The audio that arrived from `start` to `end` (monotonic clock)."""
        with self._frames_lock:
            return b"".join(data for at, data in self._frames if start <= at <= end)


class _ToneSource(RTP.RTPPacketManager):
    """Takes the place of an RTP client's send buffer.

    pyVoIP's transmitter thread reads one 20 ms frame per packet on its own
    clock. Generating the frame at that moment keeps the tone continuous and
    in real time, and a new tone or silence is heard from the next packet on,
    with no backlog that a clock-paced writer would build up when pyVoIP's
    sleeps run slightly long.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tone: tuple[float, float] | None = None
        self._sample = 0
        self._tone_lock = threading.Lock()

    def play(self, frequency: float, level: float) -> None:
        with self._tone_lock:
            self._tone = (frequency, level)

    def silence(self) -> None:
        with self._tone_lock:
            self._tone = None

    def read(self, length: int = FRAME_BYTES) -> bytes:
        with self._tone_lock:
            if self._tone is None:
                return SILENCE * length
            frequency, level = self._tone
            frame = to_u8(sine(frequency, length, level, start=self._sample))
            self._sample += length
            return frame

    def write(self, offset: int, data: bytes) -> None:
        # Audio comes from the tone only; write_audio has nothing to feed.
        return None


class _SIPClient(SIP.SIPClient):
    """pyVoIP's SIP client with the fixes that Asterisk needs.

    - An ACK carries the To tag of the response it acknowledges; pyVoIP puts
      a random tag there, so Asterisk never matches the ACK of a 200 OK and
      drops the call 32 s after it was answered.
    - A final failure (486, 603, 487...) to the INVITE of a call being dialed
      is acknowledged and ends the call; pyVoIP ignores all but 404 and 503.
    - REGISTER waits for the answer to its own request and hands any other
      message to the call logic. pyVoIP takes the first datagram that arrives
      for the answer, so a late response about a call could make the
      unregistering in stop() fail, and it retries a refused or unanswered
      REGISTER in non-daemon threads, without a bound after a 500 answer.
    """

    receiver: threading.Thread | None = None
    # The final answer to the last REGISTER; None when Asterisk was silent.
    register_status: int | None = None

    def start(self) -> None:
        # As pyVoIP's start(), but its receive loop runs in a daemon thread
        # that stop() can join, and from the moment registration is done
        # rather than one second later.
        if self.NSD:
            raise RuntimeError("this SIP client was already started")
        self.NSD = True
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((self.myIP, self.myPort))
        self.out = self.s
        self.register()
        self.receiver = threading.Thread(
            target=self.recv_loop, name=f"SIP {self.username}", daemon=True
        )
        self.receiver.start()

    def recv_loop(self) -> None:
        try:
            super().recv_loop()
        except OSError:
            # The socket was closed under a loop waiting for the receive lock.
            if self.NSD:
                raise

    def register(self) -> bool:
        status = self._register_transaction(unregister=False)
        self.register_status = status
        if status != 200:
            logger.debug("REGISTER of %s answered %s", self.username, status)
            self.phone._status = PhoneStatus.FAILED
            return False
        self.phone._status = PhoneStatus.REGISTERED
        if self.NSD:
            # Renew before expiry; a daemon so a forgotten phone cannot keep
            # the test process alive.
            self.registerThread = threading.Timer(
                self.default_expires - 5, self.register
            )
            self.registerThread.daemon = True
            self.registerThread.start()
        return True

    def deregister(self) -> bool:
        return self._register_transaction(unregister=True) == 200

    def _register_transaction(self, unregister: bool) -> int | None:
        """Send a REGISTER, answer its challenge and return the final status,
        or None if Asterisk did not answer within `register_timeout`."""
        deadline = time.monotonic() + self.register_timeout
        request = self.gen_first_response(deregister=unregister)
        call_id = re.search(r"^Call-ID: (\S+)", request, re.MULTILINE)
        challenged = False
        try:
            with self.recvLock:
                self.out.sendto(request.encode("utf8"), (self.server, self.port))
                while True:
                    message = self._next_message(deadline)
                    if message is None:
                        return None
                    if call_id is None or message.headers.get("Call-ID") != call_id[1]:
                        self._handle_meanwhile(message)
                        continue
                    status = int(message.status)
                    if status == 401 and not challenged:
                        challenged = True
                        answer = self.gen_register(message, deregister=unregister)
                        self.out.sendto(answer.encode("utf8"), (self.server, self.port))
                    elif status >= 200:
                        return status
        except OSError:
            logger.debug("REGISTER of %s failed: socket closed", self.username)
            return None

    def _handle_meanwhile(self, message: SIP.SIPMessage) -> None:
        """A message about a call that arrived while registering."""
        try:
            self.parse_message(message)
        except Exception:
            logger.exception("%s could not handle a SIP message", self.username)

    def _next_message(self, deadline: float) -> SIP.SIPMessage | None:
        """The next SIP message pyVoIP can parse, or None at the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self.s], [], [], remaining)
            if not readable:
                return None
            try:
                return SIP.SIPMessage(self.s.recv(8192))
            except (SIP.SIPParseError, ValueError, KeyError, IndexError):
                # Requests pyVoIP has no parser for, such as OPTIONS.
                continue

    def gen_ack(self, request: SIP.SIPMessage) -> str:
        ack = super().gen_ack(request)
        to = request.headers["To"]
        tagged = f"To: {to['raw']};tag={to['tag']}" if to["tag"] else f"To: {to['raw']}"
        lines = [
            tagged if line.startswith("To:") else line for line in ack.split("\r\n")
        ]
        return "\r\n".join(lines)

    def gen_cancel(self, invite: SIP.SIPMessage) -> str:
        """A CANCEL for an INVITE this client sent and that is unanswered."""
        lines = invite.raw.decode("utf8").split("\r\n\r\n")[0].split("\r\n")
        first = lines[0].replace("INVITE", "CANCEL", 1)
        kept = [
            line
            for line in lines[1:]
            if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "Max-Forwards")
        ]
        cseq = f"CSeq: {invite.headers['CSeq']['check']} CANCEL"
        return "\r\n".join([first, *kept, cseq, "Content-Length: 0", "", ""])

    def parse_message(self, message: SIP.SIPMessage) -> None:
        if message.type == SIP.SIPMessageType.RESPONSE:
            # pyVoIP takes any 200 OK for a dialed call as the answer to its
            # INVITE, including the one to a CANCEL, and then fails on its
            # missing SDP.
            if message.headers["CSeq"]["method"] != "INVITE":
                return
            if self._ends_dialing(message):
                return
        super().parse_message(message)

    def _ends_dialing(self, response: SIP.SIPMessage) -> bool:
        status = int(response.status)
        if status < 300 or status in (404, 503):
            return False
        call = self.phone.calls.get(response.headers.get("Call-ID", ""))
        if not isinstance(call, _Call) or call.state != CallState.DIALING:
            return False
        if response.headers["CSeq"]["check"] != call.request.headers["CSeq"]["check"]:
            return False
        self.out.sendto(self.gen_ack(response).encode("utf8"), (self.server, self.port))
        call.refused(
            "cancelled" if call.cancelled else f"{status} {response.status.phrase}"
        )
        return True


class _Call(VoIPCall):
    """A pyVoIP call whose RTP clients use the phone's tone and receiver."""

    failure: str | None = None
    cancelled = False

    @property
    def active(self) -> bool:
        """Ringing, answered, or being dialed and not given up on."""
        if self.state == CallState.DIALING:
            return not self.cancelled
        return self.state in (CallState.RINGING, CallState.ANSWERED)

    def create_rtp_clients(
        self,
        codecs: dict[int, RTP.PayloadType],
        ip: str,
        port: int,
        request: SIP.SIPMessage,
        baseport: int,
    ) -> None:
        usable = {pt: codec for pt, codec in codecs.items() if codec in USABLE_CODECS}
        super().create_rtp_clients(usable or codecs, ip, port, request, baseport)
        # pyVoIP records the port of dialed calls only; answered calls need it
        # too, so that the port stays reserved for as long as the call lasts.
        self.assignedPorts[port] = usable or codecs
        phone = self.phone
        assert isinstance(phone, _VoIPPhone)
        for client in self.RTPClients:
            client.pmin = phone.receiver
            client.pmout = phone.source

    def refused(self, reason: str) -> None:
        """The far end refused the call being dialed."""
        self.failure = reason
        self.state = CallState.ENDED
        self.phone.calls.pop(self.call_id, None)

    def hangup(self) -> None:
        super().hangup()
        self._ended()

    def bye(self) -> None:
        super().bye()
        self._ended()

    def _ended(self) -> None:
        phone = self.phone
        assert isinstance(phone, _VoIPPhone)
        phone.source.silence()


class _VoIPPhone(VoIPPhone):
    """pyVoIP's phone, making `_Call`s and taking only RTP ports that are free."""

    sip: _SIPClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiver = _Receiver()
        self.source = _ToneSource()
        self.sip = _SIPClient(
            self.server,
            self.port,
            self.username,
            self.password,
            phone=self,
            myIP=self.myIP,
            myPort=self.sip.myPort,
            callCallback=self.callback,
            fatalCallback=self.fatal,
        )
        self.sip.register_timeout = SIP_ANSWER_TIMEOUT

    def _create_Call(self, request: SIP.SIPMessage, sess_id: int) -> None:
        call_id = request.headers["Call-ID"]
        self.calls[call_id] = _Call(
            self,
            CallState.RINGING,
            request,
            sess_id,
            self.myIP,
            sendmode=self.recvmode,
        )

    def call(self, number: str) -> VoIPCall:
        port = self.request_port()
        media = {port: {0: RTP.PayloadType.PCMU, 101: RTP.PayloadType.EVENT}}
        request, call_id, session = self.sip.invite(
            number,
            media,  # type: ignore[arg-type]
            RTP.TransmitType.SENDRECV,
        )
        call = _Call(
            self,
            CallState.DIALING,
            request,
            session,
            self.myIP,
            ms=media,  # type: ignore[arg-type]
            sendmode=self.sendmode,
        )
        self.calls[call_id] = call
        return call

    def request_port(self, blocking: bool = True) -> int:
        # pyVoIP picks any port of the range, even one another process holds,
        # and then fails to bind it in a thread where nobody sees the error.
        # A port is taken while a call that holds it is known to the phone.
        with self.portsLock:
            held = {port for call in self.calls.values() for port in call.assignedPorts}
            candidates = [
                port
                for port in range(self.rtpPortLow, self.rtpPortHigh + 1)
                if port not in held
            ]
            random.shuffle(candidates)
            for port in candidates:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    try:
                        probe.bind((self.myIP, port))
                    except OSError:
                        continue
                return port
        raise PhoneError(
            f"no free RTP port in {self.rtpPortLow}-{self.rtpPortHigh}; "
            "give each phone its own range"
        )

    def release_ports(self, call: VoIPCall | None = None) -> None:
        # Ports are free once their call has left `calls` (see request_port).
        # pyVoIP's version, run whenever a call object is collected, also
        # drops every call whose answering callback has returned, which here
        # is every answered call: the far end's BYE would then go unheard.
        return None


class Phone:
    """A registered SIP phone with one call at a time, for tests.

    `auto_answer=False` leaves incoming calls ringing until `answer()`.
    """

    def __init__(
        self,
        username: str,
        password: str,
        server: str = "127.0.0.1",
        port: int = 5070,
        *,
        local_ip: str = "127.0.0.1",
        sip_port: int | None = None,
        rtp_low: int,
        rtp_high: int,
        auto_answer: bool = True,
    ) -> None:
        self.username = username
        self.sip_port = sip_port if sip_port is not None else free_udp_port(local_ip)
        self.auto_answer = auto_answer
        self._lock = threading.Lock()
        self._call: _Call | None = None
        self._started = False
        self._stopped = False
        self._dialer: threading.Thread | None = None
        self._phone = _VoIPPhone(
            server,
            port,
            username,
            password,
            myIP=local_ip,
            callCallback=self._on_incoming,
            sipPort=self.sip_port,
            rtpPortLow=rtp_low,
            rtpPortHigh=rtp_high,
        )

    def __repr__(self) -> str:
        return f"Phone({self.username!r}, sip_port={self.sip_port})"

    def start(self, timeout: float = 10) -> None:
        """Register with Asterisk; PhoneError if not registered in time."""
        if self._started:
            raise PhoneError(f"{self!r} was already started")
        self._started = True
        deadline = time.monotonic() + timeout
        errors: list[BaseException] = []

        def register() -> None:
            try:
                self._phone.start()
            except BaseException as exc:
                errors.append(exc)

        # pyVoIP registers inside start() and waits there for Asterisk's
        # answer on a socket, so it runs off the caller's thread.
        self._phone.sip.register_timeout = max(1, min(int(timeout), SIP_ANSWER_TIMEOUT))
        threading.Thread(target=register, name=f"{self!r} start", daemon=True).start()
        status = self._wait_for(
            lambda: (
                errors
                or self._phone.get_status()
                in (PhoneStatus.REGISTERED, PhoneStatus.FAILED)
            ),
            deadline,
        )
        if status and not errors and self._phone.get_status() == PhoneStatus.REGISTERED:
            logger.debug("%r registered", self)
            return
        self.stop()
        if errors:
            raise PhoneError(f"{self!r} could not start: {errors[0]!r}")
        answer = self._phone.sip.register_status
        if status and answer is not None:
            raise PhoneError(
                f"{self!r}: REGISTER refused with {answer}; check the username, "
                "password and realm pushed to Asterisk"
            )
        raise PhoneError(
            f"{self!r}: no answer to REGISTER from {self._phone.server}:"
            f"{self._phone.port} within {self._phone.sip.register_timeout} s; "
            "is Asterisk running?"
        )

    def register_again(self) -> None:
        """Send a fresh REGISTER now, as a phone does when its registrar is back.

        PhoneError when Asterisk refuses it (a deleted or rotated credential)
        or does not answer.
        """
        status = self._phone.sip._register_transaction(unregister=False)
        if status != 200:
            raise PhoneError(f"{self!r}: REGISTER answered {status}")

    def stop(self) -> None:
        """Hang up, unregister and end pyVoIP's threads; safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            call = self._call
        self._phone.source.silence()
        if call is not None and call.active and call.state != CallState.ANSWERED:
            # pyVoIP's stop() ends answered calls only.
            self.hang_up()
        # pyVoIP's stop() needs the SIP receive lock, which a dial still
        # waiting for its challenge holds on a blocking socket: the sockets
        # are closed first then, and stop() gets a deadline in any case.
        if self._dialer is not None and self._dialer.is_alive():
            logger.debug("%r is stuck dialing; closing its sockets", self)
            self._close_everything()
        stopper = threading.Thread(
            target=self._phone.stop, name=f"{self!r} stop", daemon=True
        )
        stopper.start()
        stopper.join(STOP_TIMEOUT)
        if stopper.is_alive():
            logger.warning("%r did not unregister in time; closing its sockets", self)
        self._close_everything()
        receiver = self._phone.sip.receiver
        if receiver is not None:
            receiver.join(STOP_TIMEOUT)
        logger.debug("%r stopped", self)

    def wait_for_call(self, timeout: float) -> None:
        """Wait for an incoming call to be answered (or to ring, without
        auto_answer). pyVoIP hands a call over one second after its INVITE."""
        wanted = CallState.ANSWERED if self.auto_answer else CallState.RINGING
        if not self._wait_for(
            lambda: self._call is not None and self._call.state == wanted,
            time.monotonic() + timeout,
        ):
            raise PhoneError(f"{self!r} got no call within {timeout} s")

    def answer(self) -> None:
        """Answer the ringing call (for phones made with auto_answer=False)."""
        call = self._call
        if call is None or call.state != CallState.RINGING:
            raise PhoneError(f"{self!r} has no ringing call to answer")
        call.answer()

    def dial(self, number: str, timeout: float = 10) -> None:
        """Call sip:<number>@server and wait until the far end answers."""
        deadline = time.monotonic() + timeout
        self._require_running()
        with self._lock:
            if self._call is not None and self._call.active:
                raise PhoneError(f"{self!r} already has a call")
        placed: list[VoIPCall | BaseException] = []

        def invite() -> None:
            try:
                placed.append(self._phone.call(number))
            except BaseException as exc:
                placed.append(exc)

        # pyVoIP waits for the INVITE's challenge on a blocking socket.
        inviter = threading.Thread(target=invite, name=f"{self!r} dial", daemon=True)
        self._dialer = inviter
        inviter.start()
        inviter.join(max(0.0, deadline - time.monotonic()))
        if not placed:
            raise PhoneError(f"{self!r}: no answer to the INVITE for {number}")
        call = placed[0]
        if isinstance(call, BaseException):
            raise PhoneError(f"{self!r} could not call {number}: {call!r}")
        assert isinstance(call, _Call)
        with self._lock:
            self._call = call
        self._wait_for(lambda: call.state != CallState.DIALING, deadline)

        if call.state == CallState.ANSWERED:
            logger.debug("%r: call to %s answered", self, number)
            return
        if call.state == CallState.DIALING:
            self._cancel(call)
            raise PhoneError(f"{self!r}: {number} did not answer within {timeout} s")
        raise PhoneError(
            f"{self!r}: call to {number} refused: {call.failure or 'not found'}"
        )

    def hang_up(self) -> None:
        """End the current call, whatever its state; nothing if there is none."""
        call = self._call
        if call is None:
            return
        if call.state == CallState.ANSWERED:
            call.hangup()
        elif call.state == CallState.RINGING:
            self._decline(call)
        elif call.state == CallState.DIALING:
            self._cancel(call)
        logger.debug("%r hung up", self)

    def wait_for_hangup(self, timeout: float) -> None:
        """Wait until the current call has ended (the far end hung up)."""
        if self._call is None:
            raise PhoneError(f"{self!r} never had a call")
        if not self._wait_for(
            lambda: self._call is None or self._call.state == CallState.ENDED,
            time.monotonic() + timeout,
        ):
            raise PhoneError(f"{self!r}: the call was not hung up within {timeout} s")

    @property
    def in_call(self) -> bool:
        """Whether a call is answered and not yet ended."""
        call = self._call
        return call is not None and call.state == CallState.ANSWERED

    def play_tone(self, frequency: float, level: float = 0.5) -> None:
        """Send a sine of peak `level` (0-1) until stop_tone or the call ends."""
        if not self.in_call:
            raise PhoneError(f"{self!r} has no call to play a tone into")
        self._phone.source.play(frequency, level)

    def stop_tone(self) -> None:
        """Send silence again."""
        self._phone.source.silence()

    def heard(self, frequency: float, seconds: float = 1.0) -> float:
        """Listen from now for `seconds` and return the share of the received
        power at `frequency`: about 1.0 for a clean tone, 0.0 for silence."""
        return tone_ratio(from_u8(self._listen(seconds)), frequency)

    def received_rms(self, seconds: float = 1.0) -> float:
        """Listen from now for `seconds` and return the RMS level, where a
        full-scale sine measures about 0.7 and silence 0.0."""
        return rms(from_u8(self._listen(seconds)))

    def _listen(self, seconds: float) -> bytes:
        start = time.monotonic()
        # The measurement window itself: audio keeps arriving while we wait.
        time.sleep(seconds)
        return self._phone.receiver.between(start, time.monotonic())

    def _on_incoming(self, call: VoIPCall) -> None:
        """pyVoIP's callback for a new INVITE, run in a thread of its own."""
        try:
            assert isinstance(call, _Call)
            with self._lock:
                busy = self._stopped or (self._call is not None and self._call.active)
                if not busy:
                    self._call = call
            if busy:
                self._decline(call)
                logger.debug("%r declined a second call", self)
                return
            if self.auto_answer and call.state == CallState.RINGING:
                call.answer()
                logger.debug("%r answered a call", self)
        except Exception:
            logger.exception("%r failed to take an incoming call", self)

    def _decline(self, call: VoIPCall) -> None:
        busy = self._phone.sip.gen_busy(call.request)
        self._send(busy)
        call.state = CallState.ENDED
        self._phone.calls.pop(call.call_id, None)

    def _cancel(self, call: _Call) -> None:
        # pyVoIP cannot cancel a call; without a CANCEL, Asterisk would ring on
        # and an answer would arrive for a call the phone has forgotten.
        # The call stays known until Asterisk's 487 for it is acknowledged.
        call.cancelled = True
        self._send(self._phone.sip.gen_cancel(call.request))

    def _send(self, message: str) -> None:
        sip = self._phone.sip
        try:
            sip.out.sendto(message.encode("utf8"), (sip.server, sip.port))
        except (OSError, AttributeError):
            logger.debug("%r could not send a SIP message; phone stopped", self)

    def _require_running(self) -> None:
        if not self._started or self._stopped:
            raise PhoneError(f"{self!r} is not running; call start() first")

    def _close_everything(self) -> None:
        """End pyVoIP's loops and close its sockets, whatever state it is in."""
        sip = self._phone.sip
        sip.NSD = False
        if sip.registerThread is not None:
            sip.registerThread.cancel()
        calls = [*self._phone.calls.values(), *([self._call] if self._call else [])]
        for call in calls:
            for client in call.RTPClients:
                client.NSD = False
                # Clients that never started have no socket.
                rtp_socket = getattr(client, "sin", None)
                if rtp_socket is not None:
                    rtp_socket.close()
        sock = getattr(sip, "s", None)
        if sock is not None:
            # shutdown() wakes a thread blocked in recv(); close() alone does not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @staticmethod
    def _wait_for(condition: Callable[[], object], deadline: float) -> bool:
        """Poll `condition` until it is true or the deadline passes."""
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)
