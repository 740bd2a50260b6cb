"""What the door's display or reader says for each reason code, per language.

The site rules' ``messages`` override these defaults per language and reason.
``{display}`` is filled in with the member's display name, or left out together
with the comma or space before it when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_LANGUAGE = "en"

REASONS = (
    "ok", "unknown_credential", "bad_pass", "pass_expired", "pass_replayed",
    "device_not_bound", "locked_down", "blocked", "ticket_not_valid_now", "zone_not_allowed",
    "ticket_used", "outside_schedule", "entitlements_stale", "site_closed", "no_booking",
    "not_started", "expired", "frozen", "site_not_allowed", "visit_limit", "no_credits",
    "no_contract", "unpaid", "medical_expired", "anti_passback", "capacity_full", "remote_open",
)  # fmt: skip

DEFAULTS: dict[str, dict[str, str]] = {
    "en": {
        "ok": "Welcome, {display}!",
        "unknown_credential": "Card not recognised. Please ask at the reception.",
        "bad_pass": "This pass is not valid. Refresh it in the app.",
        "pass_expired": "This pass has expired. Refresh it in the app.",
        "pass_replayed": "This pass was already used. Refresh it in the app.",
        "device_not_bound": "This phone is not your registered phone.",
        "locked_down": "The entrance is closed right now.",
        "blocked": "Access blocked, {display}. Please ask at the reception.",
        "ticket_not_valid_now": "This ticket is not valid at this time.",
        "zone_not_allowed": "Your membership does not include this area, {display}.",
        "ticket_used": "This ticket has already been used.",
        "outside_schedule": "Your membership does not allow entry at this time, {display}.",
        "entitlements_stale": "Entry is not possible right now. Please ask at the reception.",
        "site_closed": "We are closed right now.",
        "no_booking": "No booking found for this area now, {display}.",
        "not_started": "Your membership has not started yet, {display}.",
        "expired": "Your membership has expired, {display}.",
        "frozen": "Your membership is frozen, {display}.",
        "site_not_allowed": "Your membership is not valid at this club, {display}.",
        "visit_limit": "You have used all your visits for this period, {display}.",
        "no_credits": "No visits left on your clip card, {display}.",
        "no_contract": "No valid membership found, {display}.",
        "unpaid": "Please settle your outstanding payment at the reception, {display}.",
        "medical_expired": "Your medical certificate has expired, {display}.",
        "anti_passback": "You are already checked in, {display}.",
        "capacity_full": "We are full right now. Please try again shortly.",
        "remote_open": "Opened by the reception.",
    },
    "nb": {
        "ok": "Velkommen, {display}!",
        "unknown_credential": "Kortet er ukjent. Spør i resepsjonen.",
        "bad_pass": "Passet er ikke gyldig. Oppdater det i appen.",
        "pass_expired": "Passet er utløpt. Oppdater det i appen.",
        "pass_replayed": "Passet er allerede brukt. Oppdater det i appen.",
        "device_not_bound": "Denne telefonen er ikke din registrerte telefon.",
        "locked_down": "Inngangen er stengt nå.",
        "blocked": "Adgangen er sperret, {display}. Spør i resepsjonen.",
        "ticket_not_valid_now": "Billetten er ikke gyldig nå.",
        "zone_not_allowed": "Medlemskapet ditt gjelder ikke dette området, {display}.",
        "ticket_used": "Billetten er allerede brukt.",
        "outside_schedule": "Medlemskapet ditt gir ikke adgang nå, {display}.",
        "entitlements_stale": "Adgang er ikke mulig akkurat nå. Spør i resepsjonen.",
        "site_closed": "Vi har stengt nå.",
        "no_booking": "Fant ingen booking for dette området nå, {display}.",
        "not_started": "Medlemskapet ditt har ikke startet ennå, {display}.",
        "expired": "Medlemskapet ditt er utløpt, {display}.",
        "frozen": "Medlemskapet ditt er fryst, {display}.",
        "site_not_allowed": "Medlemskapet ditt gjelder ikke på dette senteret, {display}.",
        "visit_limit": "Du har brukt alle besøkene for perioden, {display}.",
        "no_credits": "Klippekortet ditt er tomt, {display}.",
        "no_contract": "Fant ikke noe gyldig medlemskap, {display}.",
        "unpaid": "Du har en ubetalt regning, {display}. Spør i resepsjonen.",
        "medical_expired": "Den medisinske attesten din er utløpt, {display}.",
        "anti_passback": "Du er allerede sjekket inn, {display}.",
        "capacity_full": "Det er fullt nå. Prøv igjen om litt.",
        "remote_open": "Åpnet av resepsjonen.",
    },
    "da": {
        "ok": "Velkommen, {display}!",
        "unknown_credential": "Kortet er ukendt. Spørg i receptionen.",
        "bad_pass": "Passet er ikke gyldigt. Opdater det i appen.",
        "pass_expired": "Passet er udløbet. Opdater det i appen.",
        "pass_replayed": "Passet er allerede brugt. Opdater det i appen.",
        "device_not_bound": "Denne telefon er ikke din registrerede telefon.",
        "locked_down": "Indgangen er lukket lige nu.",
        "blocked": "Adgangen er spærret, {display}. Spørg i receptionen.",
        "ticket_not_valid_now": "Billetten er ikke gyldig nu.",
        "zone_not_allowed": "Dit medlemskab gælder ikke dette område, {display}.",
        "ticket_used": "Billetten er allerede brugt.",
        "outside_schedule": "Dit medlemskab giver ikke adgang nu, {display}.",
        "entitlements_stale": "Adgang er ikke mulig lige nu. Spørg i receptionen.",
        "site_closed": "Vi har lukket nu.",
        "no_booking": "Ingen booking fundet for dette område nu, {display}.",
        "not_started": "Dit medlemskab er ikke startet endnu, {display}.",
        "expired": "Dit medlemskab er udløbet, {display}.",
        "frozen": "Dit medlemskab er sat på pause, {display}.",
        "site_not_allowed": "Dit medlemskab gælder ikke i dette center, {display}.",
        "visit_limit": "Du har brugt alle besøg i perioden, {display}.",
        "no_credits": "Der er ingen klip tilbage på dit klippekort, {display}.",
        "no_contract": "Intet gyldigt medlemskab fundet, {display}.",
        "unpaid": "Du har en ubetalt regning, {display}. Spørg i receptionen.",
        "medical_expired": "Din lægeattest er udløbet, {display}.",
        "anti_passback": "Du er allerede tjekket ind, {display}.",
        "capacity_full": "Der er fuldt lige nu. Prøv igen om lidt.",
        "remote_open": "Åbnet af receptionen.",
    },
    "fr": {
        "ok": "Bienvenue, {display} !",
        "unknown_credential": "Carte non reconnue. Adressez-vous à l'accueil.",
        "bad_pass": "Ce pass n'est pas valide. Actualisez-le dans l'application.",
        "pass_expired": "Ce pass a expiré. Actualisez-le dans l'application.",
        "pass_replayed": "Ce pass a déjà été utilisé. Actualisez-le dans l'application.",
        "device_not_bound": "Ce téléphone n'est pas votre téléphone enregistré.",
        "locked_down": "L'entrée est fermée pour le moment.",
        "blocked": "Accès bloqué, {display}. Adressez-vous à l'accueil.",
        "ticket_not_valid_now": "Ce billet n'est pas valable à cette heure.",
        "zone_not_allowed": "Votre abonnement ne donne pas accès à cet espace, {display}.",
        "ticket_used": "Ce billet a déjà été utilisé.",
        "outside_schedule": "Votre abonnement ne permet pas l'accès à cette heure, {display}.",
        "entitlements_stale": "L'accès est impossible pour le moment. Adressez-vous à l'accueil.",
        "site_closed": "Nous sommes fermés pour le moment.",
        "no_booking": "Aucune réservation trouvée pour cet espace maintenant, {display}.",
        "not_started": "Votre abonnement n'a pas encore commencé, {display}.",
        "expired": "Votre abonnement a expiré, {display}.",
        "frozen": "Votre abonnement est suspendu, {display}.",
        "site_not_allowed": "Votre abonnement n'est pas valable dans ce club, {display}.",
        "visit_limit": "Vous avez utilisé toutes vos entrées pour la période, {display}.",
        "no_credits": "Il ne reste plus d'entrées sur votre carte, {display}.",
        "no_contract": "Aucun abonnement valide trouvé, {display}.",
        "unpaid": "Merci de régler votre impayé à l'accueil, {display}.",
        "medical_expired": "Votre certificat médical a expiré, {display}.",
        "anti_passback": "Vous êtes déjà entré, {display}.",
        "capacity_full": "Nous sommes complets. Réessayez dans un moment.",
        "remote_open": "Ouvert par l'accueil.",
    },
}

_WITHOUT_DISPLAY = re.compile(r"(,\s*|\s+)?\{display\}")


def render(
    reason: str,
    display: str | None,
    language: str = DEFAULT_LANGUAGE,
    site_messages: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The display text for ``reason`` in ``language`` (unknown languages fall back to en)."""
    lang = language if language in DEFAULTS else DEFAULT_LANGUAGE
    template = None
    if site_messages:
        template = (site_messages.get(language) or {}).get(reason)
    if template is None:
        template = DEFAULTS[lang].get(reason) or DEFAULTS[DEFAULT_LANGUAGE].get(reason, reason)
    if display:
        return template.replace("{display}", display)
    return _WITHOUT_DISPLAY.sub("", template).strip()
