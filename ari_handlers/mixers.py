"""What a mixer (re)connecting means: push configuration, then reconcile.

Credentials go first so phones can register again at once; then conference
state is brought back in line with the channels and bridges that survived.
"""

from __future__ import annotations

import logging

from app.services.conferences import ConferenceService
from app.services.mixers import MixerLink
from app.services.sip import SipService
from ari_handlers.errors import AriError

logger = logging.getLogger(__name__)


def register(link: MixerLink, sip: SipService, conferences: ConferenceService) -> None:
    async def connected() -> None:
        logger.info("mixer %s connected; pushing configuration", link.id)
        try:
            await sip.push_all(link)
            await conferences.reconcile(link)
        except AriError:
            # The next reconnect runs this again; nothing is left half-done
            # that a second pass cannot finish.
            logger.exception("reconciling mixer %s failed", link.id)

    async def disconnected() -> None:
        logger.warning("mixer %s disconnected", link.id)

    link.ari.on_connect(connected)
    link.ari.on_disconnect(disconnected)
