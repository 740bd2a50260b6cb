"""The installer UI's words in the site's language: one catalogue for pages, JS and API answers.

Each message id has its text in every language of :mod:`gateway.messages` (en, nb, da, fr),
in that order. Placeholders are ``{name}`` (``str.format``), the same in every language.
Pages call ``_("id", name=...)`` (Jinja) and ``say`` for codes (``{{ d.mode | say('mode') }}``);
the JS gets the ``js.*`` ids and the code families it shows (``T("js.working")``); Python
calls ``t(language, "id", ...)``. ``tests/web/test_i18n.py`` scans all of them, so a string
cannot escape translation. Codes the gateway reports (door modes, event types, ...) are
translated through ``FAMILIES``: ``say(lang, "mode", "lockdown")`` looks up
``mode.lockdown``; an unknown code is shown as it is, in words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.messages import DEFAULT_LANGUAGE, DEFAULTS

LANGUAGES: tuple[str, ...] = tuple(DEFAULTS)  # en, nb, da, fr: the order of each row below

# codes the gateway reports, shown through ``say``: each has ``family.code`` below
# fmt: off
FAMILIES: dict[str, tuple[str, ...]] = {
    "mode": ("normal", "unlock", "lockdown"),
    "lock": ("locked", "unlocked", "unknown"),
    "contact": ("open", "closed", "unknown"),
    "dir": ("in", "out"),
    "doorkind": ("door", "turnstile"),
    "decision": ("granted", "denied"),
    "credkind": ("nfc", "code", "pass", "phone"),
    "role": ("member", "staff"),
    "contract": ("recurring", "fixed", "clipcard"),
    "action": ("pulse", "door_test", "resync", "next_card", "osdp_install", "backup",
               "password_set", "restore", "restore_applied", "restore_failed"),
    "event": (
        "started", "stopping", "reader_online", "reader_offline", "board_online",
        "board_offline", "relay_fault", "lockdown", "door_forced", "door_held_open",
        "emergency_release", "emergency_cleared", "installer_action", "clock_unsynced",
        "ticket_double_use", "bad_message", "component_failed", "tamper", "reader_power",
        "reader_keypad", "door_closed", "unauthorised_passage", "config_changed",
        "duplicate_credential", "disk_full", "journal_unwritable", "journal_filling",
        "journal_drained", "journal_full",
    ),
}
# fmt: on

# the families the JS shows besides its own ``js.*`` ids (live rows, tool results)
JS_FAMILIES = ("decision", "credkind")

# fmt: off
MESSAGES: dict[str, tuple[str, str, str, str]] = {
    # --- navigation and frame -------------------------------------------------------------
    "nav.dashboard": ("Dashboard", "Oversikt", "Oversigt", "Tableau de bord"),
    "nav.events": ("Events", "Hendelser", "Hændelser", "Événements"),
    "nav.tools": ("Tools", "Verktøy", "Værktøjer", "Outils"),
    "nav.devices": ("Devices", "Enheter", "Enheder", "Équipements"),
    "nav.mqtt": ("MQTT", "MQTT", "MQTT", "MQTT"),
    "nav.why": ("Why?", "Hvorfor?", "Hvorfor?", "Pourquoi ?"),
    "nav.sign_out": ("Sign out", "Logg ut", "Log ud", "Se déconnecter"),
    "nav.main": ("Main menu", "Hovedmeny", "Hovedmenu", "Menu principal"),
    "stale.title": ("Gateway not answering.", "Gatewayen svarer ikke.",
                    "Gatewayen svarer ikke.", "La passerelle ne répond pas."),
    "stale.note": ("What you see may be out of date.", "Det du ser, kan være utdatert.",
                   "Det, du ser, kan være forældet.",
                   "Les informations affichées peuvent ne plus être à jour."),
    # --- sign-in and first start --------------------------------------------------------------
    "login.title": ("Sign in", "Logg inn", "Log ind", "Connexion"),
    "login.help": ("Installer password for this gateway. Forgotten it? Run {cmd} on the box.",
                   "Installatørpassordet for denne gatewayen. Glemt det? Kjør {cmd} på boksen.",
                   "Installatørens adgangskode til denne gateway. Glemt den? Kør {cmd} på boksen.",
                   "Mot de passe installateur de cette passerelle. Oublié ? Lancez {cmd} "
                   "sur le boîtier."),
    "login.password": ("Password", "Passord", "Adgangskode", "Mot de passe"),
    "login.submit": ("Sign in", "Logg inn", "Log ind", "Se connecter"),
    "login.wrong": ("Wrong password. Next try in {seconds} s.",
                    "Feil passord. Du kan prøve igjen om {seconds} s.",
                    "Forkert adgangskode. Du kan prøve igen om {seconds} s.",
                    "Mot de passe incorrect. Nouvel essai possible dans {seconds} s."),
    "login.expired": ("The form expired: please try again.",
                      "Skjemaet er utløpt. Prøv igjen.",
                      "Formularen er udløbet. Prøv igen.",
                      "Le formulaire a expiré : veuillez réessayer."),
    "login.wait": ("Too many wrong tries: wait {seconds} s and try again.",
                   "For mange feil forsøk. Vent {seconds} s og prøv igjen.",
                   "For mange forkerte forsøg. Vent {seconds} s, og prøv igen.",
                   "Trop d'essais incorrects : attendez {seconds} s puis réessayez."),
    "setup.title": ("First sign-in", "Første innlogging", "Første login", "Première connexion"),
    "setup.heading": ("Welcome: set the installer password",
                      "Velkommen! Velg installatørpassord",
                      "Velkommen! Vælg installatørens adgangskode",
                      "Bienvenue ! Choisissez le mot de passe installateur"),
    "setup.help": ("Enter the setup code from the gateway's log, or from {cmd} on the box. "
                   "It works once.",
                   "Skriv inn oppsettskoden fra gatewayens logg, eller fra {cmd} på boksen. "
                   "Den kan bare brukes én gang.",
                   "Indtast opsætningskoden fra gatewayens log eller fra {cmd} på boksen. "
                   "Den kan kun bruges én gang.",
                   "Saisissez le code d'installation indiqué dans le journal de la passerelle "
                   "ou par {cmd} sur le boîtier. Il ne sert qu'une fois."),
    "setup.code": ("Setup code", "Oppsettskode", "Opsætningskode", "Code d'installation"),
    "setup.new": ("New password ({n} characters or more)",
                  "Nytt passord (minst {n} tegn)",
                  "Ny adgangskode (mindst {n} tegn)",
                  "Nouveau mot de passe ({n} caractères minimum)"),
    "setup.again": ("Same password again", "Gjenta passordet", "Gentag adgangskoden",
                    "Confirmez le mot de passe"),
    "setup.submit": ("Set password and sign in", "Lagre passordet og logg inn",
                     "Gem adgangskoden, og log ind", "Enregistrer et se connecter"),
    "setup.wrong_code": ("That setup code is not right (or was used already).",
                         "Oppsettskoden er feil (eller allerede brukt).",
                         "Opsætningskoden er forkert (eller allerede brugt).",
                         "Ce code d'installation est incorrect (ou a déjà servi)."),
    "password.short": ("The password needs at least {n} characters.",
                       "Passordet må ha minst {n} tegn.",
                       "Adgangskoden skal have mindst {n} tegn.",
                       "Le mot de passe doit comporter au moins {n} caractères."),
    "password.long": ("The password may have at most {n} characters.",
                      "Passordet kan ha høyst {n} tegn.",
                      "Adgangskoden må højst have {n} tegn.",
                      "Le mot de passe ne peut pas dépasser {n} caractères."),
    "password.differ": ("The two passwords differ.", "Passordene er ikke like.",
                        "De to adgangskoder er ikke ens.",
                        "Les deux mots de passe ne sont pas identiques."),
    # --- dashboard ------------------------------------------------------------------------------
    "dash.attention": ("Doors needing attention: {doors} ({bad} of {total})",
                       "Dører som trenger tilsyn: {doors} ({bad} av {total})",
                       "Døre, der kræver opmærksomhed: {doors} ({bad} af {total})",
                       "Portes à vérifier : {doors} ({bad} sur {total})"),
    "dash.all_ok": ("All doors OK ({total})", "Alle dører i orden ({total})",
                    "Alle døre i orden ({total})", "Toutes les portes fonctionnent ({total})"),
    "dash.no_doors": ("No doors are configured.", "Ingen dører er satt opp.",
                      "Der er ikke sat nogen døre op.", "Aucune porte n'est configurée."),
    "door.mode": ("Mode", "Modus", "Tilstand", "Mode"),
    "door.lock": ("Lock", "Lås", "Lås", "Serrure"),
    "door.contact": ("Contact", "Dørkontakt", "Dørkontakt", "Contact de porte"),
    "door.reader_online": ("Reader {id}: online", "Leser {id}: tilkoblet",
                           "Læser {id}: tilsluttet", "Lecteur {id} : en ligne"),
    "door.reader_offline": ("Reader {id}: offline", "Leser {id}: frakoblet",
                            "Læser {id}: ikke tilsluttet", "Lecteur {id} : hors ligne"),
    "door.board_online": ("Board {id}: online", "Relékort {id}: tilkoblet",
                          "Relækort {id}: tilsluttet", "Carte relais {id} : en ligne"),
    "door.board_unreachable": ("Board {id}: unreachable", "Relékort {id}: utilgjengelig",
                               "Relækort {id}: kan ikke nås", "Carte relais {id} : injoignable"),
    "problem.board": ("Relay board {board} unreachable: {reason}",
                      "Relékortet {board} svarer ikke: {reason}",
                      "Relækortet {board} kan ikke nås: {reason}",
                      "Carte relais {board} injoignable : {reason}"),
    "problem.reader": ("Reader {reader} offline: {reason}",
                       "Leseren {reader} er frakoblet: {reason}",
                       "Læseren {reader} er ikke tilsluttet: {reason}",
                       "Lecteur {reader} hors ligne : {reason}"),
    "problem.reader_reports": ("the reader reports: {alerts}", "leseren melder: {alerts}",
                               "læseren melder: {alerts}", "le lecteur signale : {alerts}"),
    "problem.no_report": ("no report from the reader yet", "ingen melding fra leseren ennå",
                          "ingen melding fra læseren endnu",
                          "aucune nouvelle du lecteur pour l'instant"),
    "dash.link": ("Central link", "Forbindelse til sentralsystemet",
                  "Forbindelse til centralsystemet", "Liaison avec le système central"),
    "dash.mqtt_off": ("MQTT is off in the config.", "MQTT er slått av i konfigurasjonen.",
                      "MQTT er slået fra i konfigurationen.",
                      "MQTT est désactivé dans la configuration."),
    "dash.connected": ("Connected to {broker}", "Tilkoblet {broker}", "Forbundet til {broker}",
                       "Connecté à {broker}"),
    "dash.not_connected": ("Not connected to {broker}", "Ikke tilkoblet {broker}",
                           "Ikke forbundet til {broker}", "Non connecté à {broker}"),
    "dash.last_error": ("Last error: {error}", "Siste feil: {error}", "Seneste fejl: {error}",
                        "Dernière erreur : {error}"),
    "dash.members": ("Members", "Medlemmer", "Medlemmer", "Membres"),
    "dash.set_version": ("Set version", "Versjon", "Version", "Version"),
    "dash.none_yet": ("none yet", "ingen ennå", "ingen endnu", "aucune pour l'instant"),
    "dash.records": ("Records", "Oppføringer", "Poster", "Fiches"),
    "dash.last_update": ("Last update", "Sist oppdatert", "Senest opdateret",
                         "Dernière mise à jour"),
    "dash.ago": ("{duration} ago", "for {duration} siden", "for {duration} siden",
                 "il y a {duration}"),
    "dash.sync": ("Sync", "Synkronisering", "Synkronisering", "Synchronisation"),
    "dash.sync_progress": ("Version {version} arriving: chunk {chunks}, {records} records "
                           "so far, last chunk {ago} s ago",
                           "Versjon {version} lastes ned: del {chunks}, {records} oppføringer "
                           "hittil, siste del for {ago} s siden",
                           "Version {version} hentes: del {chunks}, {records} poster indtil "
                           "videre, seneste del for {ago} s siden",
                           "Réception de la version {version} : bloc {chunks}, {records} fiches "
                           "reçues, dernier bloc il y a {ago} s"),
    "dash.box": ("This box", "Denne boksen", "Denne boks", "Ce boîtier"),
    "dash.unsent": ("Not yet sent", "Ikke sendt ennå", "Ikke sendt endnu", "Pas encore envoyés"),
    "dash.unsent_count": ("{n} check-ins/events", "{n} innsjekkinger og hendelser",
                          "{n} check-ins og hændelser", "{n} passages et événements"),
    "dash.unknown": ("unknown", "ukjent", "ukendt", "inconnu"),
    "dash.clock": ("Clock", "Klokke", "Ur", "Horloge"),
    "dash.synced": ("synced", "synkronisert", "synkroniseret", "synchronisée"),
    "dash.not_synced": ("NOT synced", "IKKE synkronisert", "IKKE synkroniseret",
                        "NON synchronisée"),
    "dash.time_here": ("Time here", "Lokal tid", "Lokal tid", "Heure locale"),
    "dash.software": ("Software", "Programvare", "Software", "Logiciel"),
    "dash.uptime": ("Up for", "Oppetid", "Oppetid", "En marche depuis"),
    "dash.just_now": ("Just now", "Akkurat nå", "Lige nu", "À l'instant"),
    "dash.waiting": ("Waiting for taps and events…", "Venter på kort og hendelser …",
                     "Venter på kort og hændelser …",
                     "En attente de badges et d'événements…"),
    "dash.all_events": ("All events →", "Alle hendelser →", "Alle hændelser →",
                        "Tous les événements →"),
    # --- durations ------------------------------------------------------------------------------
    "time.never": ("never", "aldri", "aldrig", "jamais"),
    "time.s": ("{s} s", "{s} s", "{s} s", "{s} s"),
    "time.min": ("{min} min", "{min} min", "{min} min", "{min} min"),
    "time.h_min": ("{h} h {min} min", "{h} t {min} min", "{h} t. {min} min.", "{h} h {min} min"),
    "time.d_h": ("{d} d {h} h", "{d} d {h} t", "{d} d. {h} t.", "{d} j {h} h"),
    # --- events ---------------------------------------------------------------------------------
    "events.door": ("Door", "Dør", "Dør", "Porte"),
    "events.all": ("all", "alle", "alle", "toutes"),
    "events.reason": ("Reason", "Årsak", "Årsag", "Motif"),
    "events.reason_example": ("e.g. {code}", "f.eks. {code}", "f.eks. {code}", "ex. {code}"),
    "events.member": ("Member", "Medlem", "Medlem", "Membre"),
    "events.member_hint": ("id or name", "id eller navn", "id eller navn", "identifiant ou nom"),
    "events.filter": ("Filter", "Filtrer", "Filtrér", "Filtrer"),
    "events.csv": ("CSV", "CSV", "CSV", "CSV"),
    "events.times": ("Times are the site's ({tz}).", "Klokkeslett i stedets tidssone ({tz}).",
                     "Tidspunkter i stedets tidszone ({tz}).",
                     "Heures locales du site ({tz})."),
    "events.older": ("Older →", "Eldre →", "Ældre →", "Plus anciens →"),
    "events.empty": ("Nothing here yet.", "Ingenting her ennå.", "Intet her endnu.",
                     "Rien pour l'instant."),
    # --- tools ----------------------------------------------------------------------------------
    "tools.title": ("Commissioning tools", "Verktøy for idriftsetting",
                    "Værktøjer til idriftsættelse", "Outils de mise en service"),
    "tools.next_card": ("Show me the next card", "Vis neste kort", "Vis det næste kort",
                        "Afficher le prochain badge"),
    "tools.next_card_help": ("Pick a reader, press Wait, then present a card, tag or QR code. "
                             "Its full value is shown here only.",
                             "Velg en leser, trykk på Vent og hold fram et kort, en brikke "
                             "eller en QR-kode. Hele verdien vises bare her.",
                             "Vælg en læser, tryk på Vent, og hold et kort, en brik eller en "
                             "QR-kode op. Hele værdien vises kun her.",
                             "Choisissez un lecteur, appuyez sur Attendre, puis présentez une "
                             "carte, un badge ou un QR code. Sa valeur complète ne s'affiche "
                             "qu'ici."),
    "tools.reader": ("Reader", "Leser", "Læser", "Lecteur"),
    "tools.wait_card": ("Wait for a card", "Vent på et kort", "Vent på et kort",
                        "Attendre un badge"),
    "tools.door_test": ("Door test", "Dørtest", "Dørtest", "Test de porte"),
    "tools.door": ("Door", "Dør", "Dør", "Porte"),
    "tools.unlock_seconds": ("Seconds (unlock)", "Sekunder (åpning)", "Sekunder (oplåsning)",
                             "Secondes (ouverture)"),
    "tools.unlock": ("Unlock", "Åpne", "Lås op", "Ouvrir"),
    "tools.lockdown": ("Lockdown", "Sperr", "Spær", "Verrouiller"),
    "tools.normal": ("Normal", "Normal", "Normal", "Normal"),
    "tools.pulse": ("Pulse a relay", "Puls på et relé", "Puls på et relæ",
                    "Impulsion sur un relais"),
    "tools.board": ("Board", "Relékort", "Relækort", "Carte relais"),
    "tools.output": ("Output", "Utgang", "Udgang", "Sortie"),
    "tools.seconds": ("Seconds", "Sekunder", "Sekunder", "Secondes"),
    "tools.pulse_button": ("Pulse", "Send puls", "Send puls", "Envoyer l'impulsion"),
    "tools.try": ("Try a QR code or pass", "Test en QR-kode eller et pass",
                  "Test en QR-kode eller et pas", "Tester un QR code ou un pass"),
    "tools.try_help": ("What the door would decide now. Nothing opens, nothing is recorded.",
                       "Slik ville døra avgjort nå. Ingenting åpnes, ingenting lagres.",
                       "Hvad døren ville afgøre nu. Intet åbnes, intet registreres.",
                       "Ce que la porte déciderait maintenant. Rien ne s'ouvre, rien n'est "
                       "enregistré."),
    "tools.kind": ("Kind", "Type", "Type", "Type"),
    "tools.kind_code": ("QR / barcode", "QR-/strekkode", "QR-/stregkode", "QR / code-barres"),
    "tools.kind_pass": ("Phone pass (AGP1…)", "Mobilpass (AGP1…)", "Mobilpas (AGP1…)",
                        "Pass mobile (AGP1…)"),
    "tools.kind_nfc": ("Card UID", "Kort-UID", "Kort-UID", "UID de carte"),
    "tools.value": ("Value", "Verdi", "Værdi", "Valeur"),
    "tools.decide": ("Decide", "Avgjør", "Afgør", "Décider"),
    "tools.sync": ("Sync with the central system", "Synkroniser med sentralsystemet",
                   "Synkronisér med centralsystemet", "Synchroniser avec le système central"),
    "tools.sync_help": ("Ask for a full copy of the member set.",
                        "Be om en fullstendig kopi av medlemsregisteret.",
                        "Bed om en fuld kopi af medlemsregistret.",
                        "Demander une copie complète de la liste des membres."),
    "tools.resync": ("Resync now", "Synkroniser nå", "Synkronisér nu",
                     "Synchroniser maintenant"),
    "tools.osdp": ("OSDP install mode", "OSDP-installasjonsmodus", "OSDP-installationstilstand",
                   "Mode installation OSDP"),
    "tools.osdp_help": ("Gives the reader a new Secure Channel key. Put the reader in install "
                        "mode first.",
                        "Gir leseren en ny Secure Channel-nøkkel. Sett leseren i "
                        "installasjonsmodus først.",
                        "Giver læseren en ny Secure Channel-nøgle. Sæt først læseren i "
                        "installationstilstand.",
                        "Donne au lecteur une nouvelle clé Secure Channel. Passez d'abord le "
                        "lecteur en mode installation."),
    "tools.osdp_confirm": ("Type the reader's id again to confirm",
                           "Skriv leserens id på nytt for å bekrefte",
                           "Skriv læserens id igen for at bekræfte",
                           "Retapez l'identifiant du lecteur pour confirmer"),
    "tools.osdp_button": ("Install new key", "Installer ny nøkkel", "Installér ny nøgle",
                          "Installer la nouvelle clé"),
    "tools.no_osdp": ("No OSDP readers are configured.", "Ingen OSDP-lesere er satt opp.",
                      "Der er ikke sat nogen OSDP-læsere op.",
                      "Aucun lecteur OSDP n'est configuré."),
    # --- tool answers (the API's ``message``, shown under each tool) ----------------------------
    "tool.pulsed": ("output {index} of {board} on for {seconds} s",
                    "utgang {index} på {board} er på i {seconds} s",
                    "udgang {index} på {board} er tændt i {seconds} s",
                    "sortie {index} de {board} activée pendant {seconds} s"),
    "tool.unlocked": ("{door} unlocked for {seconds} s", "{door} er åpen i {seconds} s",
                      "{door} er låst op i {seconds} s",
                      "porte {door} déverrouillée pendant {seconds} s"),
    "tool.mode": ("{door} is now in {mode} mode", "{door} er nå {mode}", "{door} er nu {mode}",
                  "la porte {door} est maintenant en mode {mode}"),
    "tool.resync": ("full resync asked of the central system",
                    "full synkronisering er bestilt fra sentralsystemet",
                    "fuld synkronisering er bestilt hos centralsystemet",
                    "synchronisation complète demandée au système central"),
    "tool.new_key": ("reader {reader} has a new Secure Channel key",
                     "leseren {reader} har fått en ny Secure Channel-nøkkel",
                     "læseren {reader} har fået en ny Secure Channel-nøgle",
                     "le lecteur {reader} a une nouvelle clé Secure Channel"),
    "tool.no_board": ("there is no board {board}", "relékortet {board} finnes ikke",
                      "relækortet {board} findes ikke", "la carte relais {board} n'existe pas"),
    "tool.no_door": ("there is no door {door}", "døra {door} finnes ikke",
                     "døren {door} findes ikke", "la porte {door} n'existe pas"),
    "tool.no_reader": ("there is no reader {reader}", "leseren {reader} finnes ikke",
                       "læseren {reader} findes ikke", "le lecteur {reader} n'existe pas"),
    "tool.board_silent": ("board {board} did not answer within 5 s",
                          "relékortet {board} svarte ikke innen 5 s",
                          "relækortet {board} svarede ikke inden for 5 s",
                          "la carte relais {board} n'a pas répondu en 5 s"),
    "tool.board_fault": ("board {board} output {index}: {error}",
                         "relékortet {board}, utgang {index}: {error}",
                         "relækortet {board}, udgang {index}: {error}",
                         "carte relais {board}, sortie {index} : {error}"),
    "tool.no_mqtt": ("MQTT is off in the config: there is nothing to sync with",
                     "MQTT er slått av i konfigurasjonen: det er ingenting å synkronisere med",
                     "MQTT er slået fra i konfigurationen: der er intet at synkronisere med",
                     "MQTT est désactivé dans la configuration : rien avec quoi synchroniser"),
    "tool.not_osdp": ("reader {reader} is not an OSDP reader",
                      "leseren {reader} er ikke en OSDP-leser",
                      "læseren {reader} er ikke en OSDP-læser",
                      "le lecteur {reader} n'est pas un lecteur OSDP"),
    "tool.no_new_key": ("reader {reader} did not take a new key within 30 s: is it in "
                        "install mode?",
                        "leseren {reader} tok ikke imot ny nøkkel innen 30 s. Er den i "
                        "installasjonsmodus?",
                        "læseren {reader} tog ikke imod en ny nøgle inden for 30 s. Er den i "
                        "installationstilstand?",
                        "le lecteur {reader} n'a pas accepté de nouvelle clé en 30 s : est-il "
                        "en mode installation ?"),
    "tool.not_member": ("{member} is not in the entitlement set",
                        "{member} finnes ikke i medlemsregisteret",
                        "{member} findes ikke i medlemsregistret",
                        "{member} ne figure pas dans la liste des membres"),
    "tool.confirm": ("type the reader's id again to confirm",
                     "skriv leserens id på nytt for å bekrefte",
                     "skriv læserens id igen for at bekræfte",
                     "retapez l'identifiant du lecteur pour confirmer"),
    "tool.no_card": ("no card at {reader} within {seconds} s",
                     "ikke noe kort ved {reader} innen {seconds} s",
                     "intet kort ved {reader} inden for {seconds} s",
                     "aucun badge présenté sur {reader} en {seconds} s"),
    "tool.uid_format": ("UID, {bytes} bytes ({bits} bits)", "UID, {bytes} byte ({bits} bit)",
                        "UID, {bytes} byte ({bits} bit)", "UID, {bytes} octets ({bits} bits)"),
    "tool.code_format": ("barcode/QR text", "strekkode-/QR-tekst", "stregkode-/QR-tekst",
                         "texte de code-barres/QR"),
    "tool.pass_format": ("phone pass token", "mobilpass-token", "mobilpas-token",
                         "jeton de pass mobile"),
    "gw.no_answer": ("the gateway did not answer within {seconds} s",
                     "gatewayen svarte ikke innen {seconds} s",
                     "gatewayen svarede ikke inden for {seconds} s",
                     "la passerelle n'a pas répondu en {seconds} s"),
    "gw.not_running": ("the gateway is not running ({error})",
                       "gatewayen kjører ikke ({error})",
                       "gatewayen kører ikke ({error})",
                       "la passerelle ne fonctionne pas ({error})"),
    # --- set-up answers ---------------------------------------------------------------------
    "setup.nothing": ("nothing changed", "ingenting er endret", "intet er ændret",
                      "aucun changement"),
    "setup.applied": ("applied as version {version}: {changed}",
                      "tatt i bruk som versjon {version}: {changed}",
                      "taget i brug som version {version}: {changed}",
                      "appliqué comme version {version} : {changed}"),
    "setup.back": ("back: {message}", "tilbake: {message}", "tilbage: {message}",
                   "retour : {message}"),
    "setup.stored": ("{kind} stored as {path} (0600)", "{kind} lagret som {path} (0600)",
                     "{kind} gemt som {path} (0600)", "{kind} enregistré sous {path} (0600)"),
    "setup.not_base64": ("the upload is not base64", "opplastingen er ikke base64",
                         "uploaden er ikke base64", "le fichier envoyé n'est pas en base64"),
    # --- why ------------------------------------------------------------------------------------
    "why.heading": ("Why was this member refused?", "Hvorfor ble medlemmet avvist?",
                    "Hvorfor blev medlemmet afvist?",
                    "Pourquoi ce membre a\u2011t\u2011il été refusé ?"),
    "why.member": ("Member id or name", "Medlems-id eller navn", "Medlems-id eller navn",
                   "Identifiant ou nom du membre"),
    "why.member_hint": ("M1001 or Kari", "M1001 eller Kari", "M1001 eller Kari",
                        "M1001 ou Kari"),
    "why.at": ("What now at", "Hva skjer nå ved", "Hvad sker der nu ved",
               "Que se passe\u2011t\u2011il maintenant à"),
    "why.no_door": ("(no door)", "(ingen dør)", "(ingen dør)", "(aucune porte)"),
    "why.look_up": ("Look up", "Slå opp", "Slå op", "Rechercher"),
    "why.present": ("…or present the card at", "… eller hold kortet mot",
                    "… eller hold kortet op til", "… ou présentez le badge sur"),
    "why.wait_card": ("Wait for the card", "Vent på kortet", "Vent på kortet",
                      "Attendre le badge"),
    "why.role": ("Role", "Rolle", "Rolle", "Rôle"),
    "why.credentials": ("Credentials", "Adgangsmidler", "Adgangsmidler", "Identifiants"),
    "why.hashes": ("cards and codes are kept as hashes only (present the card to check one)",
                   "kort og koder lagres bare som hasher (hold fram kortet for å sjekke det)",
                   "kort og koder gemmes kun som hashes (hold kortet op for at tjekke det)",
                   "les cartes et codes ne sont conservés que sous forme d'empreintes "
                   "(présentez la carte pour la vérifier)"),
    "why.contracts": ("Contracts", "Avtaler", "Aftaler", "Contrats"),
    "why.open_end": ("open", "løpende", "løbende", "sans fin"),
    "why.none": ("none", "ingen", "ingen", "aucun"),
    "why.blocks": ("Blocks", "Sperringer", "Spærringer", "Blocages"),
    "why.unpaid": ("Unpaid", "Ubetalt", "Ubetalt", "Impayé"),
    "why.yes": ("yes", "ja", "ja", "oui"),
    "why.several": ("Several members match", "Flere medlemmer passer",
                    "Flere medlemmer passer", "Plusieurs membres correspondent"),
    "why.unknown": ("{member} is not in this gateway's member set",
                    "{member} finnes ikke i denne gatewayens medlemsregister",
                    "{member} findes ikke i denne gateways medlemsregister",
                    "{member} ne figure pas dans la liste des membres de cette passerelle"),
    "why.now_at": ("Now at {door}:", "Nå ved {door}:", "Nu ved {door}:",
                   "Maintenant à {door} :"),
    "why.last": ("Last decisions", "Siste avgjørelser", "Seneste afgørelser",
                 "Dernières décisions"),
    "why.trace": ("Trace", "Sporing", "Sporing", "Détail"),
    "why.no_decisions": ("No decisions for this member in the local history.",
                         "Ingen avgjørelser for dette medlemmet i den lokale historikken.",
                         "Ingen afgørelser for dette medlem i den lokale historik.",
                         "Aucune décision pour ce membre dans l'historique local."),
    # --- devices --------------------------------------------------------------------------------
    "dev.help": ("Each change is checked as a whole, then applied at once: the changed doors "
                 "and readers restart, or nothing changes. The file {file} stays the source "
                 "(comments kept).",
                 "Hver endring kontrolleres samlet og tas i bruk med én gang: de endrede dørene "
                 "og leserne starter på nytt, ellers endres ingenting. Filen {file} er fortsatt "
                 "kilden (kommentarer beholdes).",
                 "Hver ændring kontrolleres samlet og tages i brug med det samme: de ændrede "
                 "døre og læsere genstarter, ellers ændres intet. Filen {file} er stadig "
                 "kilden (kommentarer bevares).",
                 "Chaque modification est vérifiée en bloc puis appliquée d'un coup : les "
                 "portes et lecteurs modifiés redémarrent, sinon rien ne change. Le fichier "
                 "{file} reste la référence (commentaires conservés)."),
    "dev.boards": ("Boards", "Relékort", "Relækort", "Cartes relais"),
    "dev.unit": ("unit {unit}", "enhet {unit}", "enhed {unit}", "unité {unit}"),
    "dev.remove": ("Remove", "Fjern", "Fjern", "Supprimer"),
    "dev.no_boards": ("No boards yet.", "Ingen relékort ennå.", "Ingen relækort endnu.",
                      "Aucune carte relais pour l'instant."),
    "dev.board_form": ("Add or change a board", "Legg til eller endre et relékort",
                       "Tilføj eller ret et relækort", "Ajouter ou modifier une carte relais"),
    "dev.id": ("Id", "Id", "Id", "Identifiant"),
    "dev.profile": ("Profile", "Profil", "Profil", "Profil"),
    "dev.serial_rtu": ("Serial port (RTU, GPIO: empty)", "Seriellport (RTU; GPIO: tom)",
                       "Seriel port (RTU; GPIO: tom)", "Port série (RTU ; GPIO : vide)"),
    "dev.host": ("Host (Modbus TCP)", "Vert (Modbus TCP)", "Vært (Modbus TCP)",
                 "Hôte (Modbus TCP)"),
    "dev.tcp_port": ("TCP port", "TCP-port", "TCP-port", "Port TCP"),
    "dev.unit_id": ("Unit id", "Enhets-id", "Enheds-id", "Numéro d'unité"),
    "dev.apply": ("Apply", "Ta i bruk", "Anvend", "Appliquer"),
    "dev.doors": ("Doors", "Dører", "Døre", "Portes"),
    "dev.door_lock": ("lock {board}/{index}", "lås {board}/{index}", "lås {board}/{index}",
                      "serrure {board}/{index}"),
    "dev.door_contact": ("contact {board}/{index}", "kontakt {board}/{index}",
                         "kontakt {board}/{index}", "contact {board}/{index}"),
    "dev.no_doors": ("No doors yet.", "Ingen dører ennå.", "Ingen døre endnu.",
                     "Aucune porte pour l'instant."),
    "dev.door_form": ("Add or change a door", "Legg til eller endre en dør",
                      "Tilføj eller ret en dør", "Ajouter ou modifier une porte"),
    "dev.zone": ("Zone", "Sone", "Zone", "Zone"),
    "dev.direction": ("Direction", "Retning", "Retning", "Sens"),
    "dev.kind": ("Kind", "Type", "Type", "Type"),
    "dev.lock_board": ("Lock: board", "Lås: relékort", "Lås: relækort", "Serrure : carte"),
    "dev.lock_output": ("Lock: output", "Lås: utgang", "Lås: udgang", "Serrure : sortie"),
    "dev.contact_board": ("Contact: board", "Dørkontakt: relékort", "Dørkontakt: relækort",
                          "Contact : carte"),
    "dev.contact_input": ("Contact: input", "Dørkontakt: inngang", "Dørkontakt: indgang",
                          "Contact : entrée"),
    "dev.closed_when": ("Contact closed when the input is",
                        "Døra er lukket når inngangen er",
                        "Døren er lukket, når indgangen er",
                        "Porte fermée quand l'entrée est"),
    "dev.active": ("on (active)", "på (aktiv)", "til (aktiv)", "activée"),
    "dev.inactive": ("off (inactive)", "av (inaktiv)", "fra (inaktiv)", "désactivée"),
    "dev.unlock_seconds": ("Unlock seconds", "Sekunder åpen", "Sekunder oplåst",
                           "Durée d'ouverture (s)"),
    "dev.readers": ("Readers", "Lesere", "Læsere", "Lecteurs"),
    "dev.no_readers": ("No readers yet.", "Ingen lesere ennå.", "Ingen læsere endnu.",
                       "Aucun lecteur pour l'instant."),
    "dev.reader_form": ("Add or change a reader", "Legg til eller endre en leser",
                        "Tilføj eller ret en læser", "Ajouter ou modifier un lecteur"),
    "dev.door": ("Door", "Dør", "Dør", "Porte"),
    "dev.serial": ("Serial port", "Seriellport", "Seriel port", "Port série"),
    "dev.osdp_address": ("OSDP address", "OSDP-adresse", "OSDP-adresse", "Adresse OSDP"),
    "dev.versions": ("Versions", "Versjoner", "Versioner", "Versions"),
    "dev.versions_help": ("The last 10 applied versions, with who changed what.",
                          "De 10 siste versjonene som er tatt i bruk, med hvem som endret hva.",
                          "De seneste 10 versioner, der er taget i brug, med hvem der ændrede "
                          "hvad.",
                          "Les 10 dernières versions appliquées, avec qui a modifié quoi."),
    "dev.go_back": ("Go back to this", "Gå tilbake til denne", "Gå tilbage til denne",
                    "Revenir à celle-ci"),
    "dev.no_versions": ("No change made from here yet.", "Ingen endringer gjort herfra ennå.",
                        "Ingen ændringer foretaget herfra endnu.",
                        "Aucune modification faite d'ici pour l'instant."),
    "dev.rollback": ("Roll back the last change", "Angre den siste endringen",
                     "Fortryd den seneste ændring", "Annuler la dernière modification"),
    "dev.backup": ("Backup", "Sikkerhetskopi", "Sikkerhedskopi", "Sauvegarde"),
    "dev.backup_help": ("Config, keys and the check-ins not yet sent, in one file encrypted "
                        "with your passphrase. A replacement box becomes this gateway with "
                        "{cmd}.",
                        "Konfigurasjon, nøkler og innsjekkinger som ikke er sendt ennå, i én fil "
                        "kryptert med passfrasen din. En ny boks blir denne gatewayen med {cmd}.",
                        "Konfiguration, nøgler og de check-ins, der endnu ikke er sendt, i én "
                        "fil krypteret med din adgangssætning. En ny boks bliver til denne "
                        "gateway med {cmd}.",
                        "Configuration, clés et passages pas encore envoyés, dans un seul "
                        "fichier chiffré avec votre phrase secrète. Un boîtier de remplacement "
                        "devient cette passerelle avec {cmd}."),
    "dev.passphrase": ("Passphrase ({n} characters or more)", "Passfrase (minst {n} tegn)",
                       "Adgangssætning (mindst {n} tegn)",
                       "Phrase secrète ({n} caractères minimum)"),
    "dev.download": ("Download backup", "Last ned sikkerhetskopi", "Hent sikkerhedskopi",
                     "Télécharger la sauvegarde"),
    # --- restore (the devices page's card, the confirmation page, restore.js) ---------------
    "restore.card": ("Restore", "Gjenoppretting", "Gendannelse", "Restauration"),
    "restore.card_help": ("Make this box the gateway of a backup, e.g. to replace a failed box. "
                          "The backup is checked first, and you see what it holds before "
                          "anything changes.",
                          "Gjør denne boksen til gatewayen i en sikkerhetskopi, f.eks. for å "
                          "erstatte en boks som har sviktet. Kopien kontrolleres først, og du "
                          "ser hva den inneholder før noe endres.",
                          "Gør denne boks til gatewayen fra en sikkerhedskopi, f.eks. for at "
                          "erstatte en defekt boks. Kopien kontrolleres først, og du ser, hvad "
                          "den indeholder, før noget ændres.",
                          "Faire de ce boîtier la passerelle d'une sauvegarde, par exemple pour "
                          "remplacer un boîtier en panne. La sauvegarde est d'abord vérifiée, et "
                          "vous voyez son contenu avant tout changement."),
    "restore.file": ("Backup file", "Sikkerhetskopifil", "Sikkerhedskopifil",
                     "Fichier de sauvegarde"),
    "restore.passphrase": ("Its passphrase", "Passfrasen til kopien", "Kopiens adgangssætning",
                           "Sa phrase secrète"),
    "restore.check": ("Check the backup", "Kontroller sikkerhetskopien",
                      "Kontrollér sikkerhedskopien", "Vérifier la sauvegarde"),
    "restore.title": ("Restore", "Gjenoppretting", "Gendannelse", "Restauration"),
    "restore.heading": ("Restore {gateway}?", "Gjenopprette {gateway}?", "Gendan {gateway}?",
                        "Restaurer {gateway} ?"),
    "restore.intro": ("The backup is whole and its config runs on this box. Nothing has "
                      "changed yet.",
                      "Sikkerhetskopien er hel, og konfigurasjonen fungerer på denne boksen. "
                      "Ingenting er endret ennå.",
                      "Sikkerhedskopien er hel, og dens konfiguration kan køre på denne boks. "
                      "Intet er ændret endnu.",
                      "La sauvegarde est intacte et sa configuration fonctionne sur ce "
                      "boîtier. Rien n'a encore changé."),
    "restore.backlog": ("This box has {n} check-ins and events the central system has not "
                        "acknowledged.",
                        "Denne boksen har {n} innsjekkinger og hendelser som sentralsystemet "
                        "ikke har bekreftet.",
                        "Denne boks har {n} check-ins og hændelser, som centralsystemet ikke "
                        "har kvitteret for.",
                        "Ce boîtier a {n} passages et événements que le système central n'a "
                        "pas confirmés."),
    "restore.backlog_kept": ("They are not deleted: they are kept aside with the rest of this "
                             "box's state, and are not sent by the restored gateway. See "
                             "“Replacing a failed gateway” in the documentation for how to "
                             "deliver them.",
                             "De slettes ikke: de legges til side sammen med resten av boksens "
                             "tilstand, og den gjenopprettede gatewayen sender dem ikke. Se "
                             "«Replacing a failed gateway» i dokumentasjonen for hvordan du "
                             "leverer dem.",
                             "De slettes ikke: de lægges til side sammen med resten af boksens "
                             "tilstand, og den gendannede gateway sender dem ikke. Se "
                             "»Replacing a failed gateway« i dokumentationen for, hvordan du "
                             "leverer dem.",
                             "Ils ne sont pas supprimés : ils sont mis de côté avec le reste de "
                             "l'état du boîtier, et la passerelle restaurée ne les envoie pas. "
                             "Voir « Replacing a failed gateway » dans la documentation pour "
                             "les transmettre."),
    "restore.brings": ("What the backup brings", "Dette inneholder sikkerhetskopien",
                       "Det indeholder sikkerhedskopien", "Contenu de la sauvegarde"),
    "restore.gateway": ("Gateway", "Gateway", "Gateway", "Passerelle"),
    "restore.made": ("Backup made", "Kopi tatt", "Kopi taget", "Sauvegarde faite le"),
    "restore.unacked": ("Not yet acknowledged", "Ikke bekreftet ennå", "Endnu ikke kvitteret",
                        "Pas encore confirmés"),
    "restore.unacked_backup": ("{n} check-ins and events (sent after the restore, seq "
                               "continues after {seq})",
                               "{n} innsjekkinger og hendelser (sendes etter gjenopprettingen, "
                               "seq fortsetter etter {seq})",
                               "{n} check-ins og hændelser (sendes efter gendannelsen, seq "
                               "fortsætter efter {seq})",
                               "{n} passages et événements (envoyés après la restauration, seq "
                               "reprend après {seq})"),
    "restore.unacked_now": ("{n} check-ins and events", "{n} innsjekkinger og hendelser",
                            "{n} check-ins og hændelser", "{n} passages et événements"),
    "restore.boards": ("Boards", "Relékort", "Relækort", "Cartes relais"),
    "restore.doors": ("Doors", "Dører", "Døre", "Portes"),
    "restore.readers": ("Readers", "Lesere", "Læsere", "Lecteurs"),
    "restore.keys": ("Keys", "Nøkler", "Nøgler", "Clés"),
    "restore.keys_count": ("{n} (OSDP reader keys: {readers})",
                           "{n} (OSDP-lesernøkler: {readers})",
                           "{n} (OSDP-læsernøgler: {readers})",
                           "{n} (clés des lecteurs OSDP : {readers})"),
    "restore.web": ("Web UI after the restore", "Webgrensesnitt etter gjenopprettingen",
                    "Webgrænseflade efter gendannelsen", "Interface web après la restauration"),
    "restore.no_members": ("The member list is not in a backup: the restored gateway receives "
                           "it from the central system. Sign in afterwards with the installer "
                           "password of the restored gateway.",
                           "Medlemslisten er ikke med i en sikkerhetskopi: den gjenopprettede "
                           "gatewayen får den fra sentralsystemet. Logg deretter inn med "
                           "installatørpassordet til den gjenopprettede gatewayen.",
                           "Medlemslisten er ikke med i en sikkerhedskopi: den gendannede "
                           "gateway får den fra centralsystemet. Log derefter ind med "
                           "installatørens adgangskode til den gendannede gateway.",
                           "La liste des membres n'est pas dans une sauvegarde : la passerelle "
                           "restaurée la reçoit du système central. Connectez-vous ensuite avec "
                           "le mot de passe installateur de la passerelle restaurée."),
    "restore.has_now": ("What this box has now", "Dette har boksen nå", "Det har boksen nu",
                        "Contenu actuel de ce boîtier"),
    "restore.osdp_keys": ("OSDP reader keys", "OSDP-lesernøkler", "OSDP-læsernøgler",
                          "Clés des lecteurs OSDP"),
    "restore.member_list": ("Member list", "Medlemsliste", "Medlemsliste", "Liste des membres"),
    "restore.none": ("none", "ingen", "ingen", "aucun"),
    "restore.yes": ("yes", "ja", "ja", "oui"),
    "restore.kept": ("Nothing is deleted: the config file, the journal, the keys and the "
                     "member list of this box are moved to {path} in the state directory.",
                     "Ingenting slettes: konfigurasjonsfilen, journalen, nøklene og "
                     "medlemslisten til denne boksen flyttes til {path} i tilstandsmappen.",
                     "Intet slettes: konfigurationsfilen, journalen, nøglerne og medlemslisten "
                     "fra denne boks flyttes til {path} i tilstandsmappen.",
                     "Rien n'est supprimé : le fichier de configuration, le journal, les clés "
                     "et la liste des membres de ce boîtier sont déplacés dans {path}, dans le "
                     "dossier d'état."),
    "restore.steps": ("The gateway stops (doors to their safe state), puts the backup in place "
                      "and starts again as {gateway}. Doors do not open during the restart.",
                      "Gatewayen stopper (dørene går til sikker tilstand), legger inn "
                      "sikkerhetskopien og starter igjen som {gateway}. Dørene åpnes ikke under "
                      "omstarten.",
                      "Gatewayen stopper (dørene går i sikker tilstand), lægger "
                      "sikkerhedskopien på plads og starter igen som {gateway}. Dørene åbner "
                      "ikke under genstarten.",
                      "La passerelle s'arrête (portes en position de sécurité), met la "
                      "sauvegarde en place et redémarre en tant que {gateway}. Les portes ne "
                      "s'ouvrent pas pendant le redémarrage."),
    "restore.confirm": ("Restore {gateway} now", "Gjenopprett {gateway} nå",
                        "Gendan {gateway} nu", "Restaurer {gateway} maintenant"),
    "restore.cancel": ("Cancel", "Avbryt", "Annullér", "Annuler"),
    "restore.no_upload": ("no such upload", "finner ikke opplastingen", "uploaden findes ikke",
                          "envoi introuvable"),
    "restore.upload_gone": ("the upload is gone: upload the backup again",
                            "opplastingen er borte: last opp sikkerhetskopien på nytt",
                            "uploaden er væk: upload sikkerhedskopien igen",
                            "l'envoi a disparu : envoyez de nouveau la sauvegarde"),
    "restore.checked": ("backup of {gateway} checked",
                        "sikkerhetskopien av {gateway} er kontrollert",
                        "sikkerhedskopien af {gateway} er kontrolleret",
                        "sauvegarde de {gateway} vérifiée"),
    "restore.restoring": ("restoring {gateway}: the gateway stops and starts again",
                          "gjenoppretter {gateway}: gatewayen stopper og starter igjen",
                          "gendanner {gateway}: gatewayen stopper og starter igen",
                          "restauration de {gateway} : la passerelle s'arrête et redémarre"),
    "restore.no_restore": ("no such restore", "finner ikke gjenopprettingen",
                           "gendannelsen findes ikke", "restauration introuvable"),
    "restore.nothing": ("nothing was restored", "ingenting ble gjenopprettet",
                        "intet blev gendannet", "rien n'a été restauré"),
    "restore.empty": ("the file is empty", "filen er tom", "filen er tom", "le fichier est vide"),
    "restore.bad_passphrase": ("the backup's passphrase has 10 characters or more",
                               "passfrasen til sikkerhetskopien har minst 10 tegn",
                               "sikkerhedskopiens adgangssætning har mindst 10 tegn",
                               "la phrase secrète de la sauvegarde a au moins 10 caractères"),
    "restore.backlog_one": ("This box has 1 check-in or event the central system has not "
                            "acknowledged.",
                            "Denne boksen har 1 innsjekking eller hendelse som sentralsystemet "
                            "ikke har bekreftet.",
                            "Denne boks har 1 check-in eller hændelse, som centralsystemet ikke "
                            "har kvitteret for.",
                            "Ce boîtier a 1 passage ou événement que le système central n'a pas "
                            "confirmé."),
    "restore.unacked_now_one": ("1 check-in or event", "1 innsjekking eller hendelse",
                                "1 check-in eller hændelse", "1 passage ou événement"),
    "restore.older": ("This box already is {gateway}, and its journal is newer than the backup "
                      "(seq {here} here, {backup} in the backup). The restored gateway numbers "
                      "its records from {next} again, so the {newer} newer records of this box "
                      "can no longer be delivered. Restore an older backup of the same gateway "
                      "only when its state here is lost or damaged.",
                      "Denne boksen er allerede {gateway}, og journalen her er nyere enn "
                      "sikkerhetskopien (seq {here} her, {backup} i kopien). Den gjenopprettede "
                      "gatewayen nummererer postene sine fra {next} igjen, så de {newer} nyere "
                      "postene på denne boksen kan ikke lenger leveres. Gjenopprett en eldre "
                      "kopi av samme gateway bare når tilstanden her er tapt eller skadet.",
                      "Denne boks er allerede {gateway}, og dens journal er nyere end "
                      "sikkerhedskopien (seq {here} her, {backup} i kopien). Den gendannede "
                      "gateway nummererer sine poster fra {next} igen, så de {newer} nyere "
                      "poster på denne boks kan ikke længere leveres. Gendan kun en ældre kopi "
                      "af samme gateway, når tilstanden her er tabt eller beskadiget.",
                      "Ce boîtier est déjà {gateway}, et son journal est plus récent que la "
                      "sauvegarde (seq {here} ici, {backup} dans la sauvegarde). La passerelle "
                      "restaurée numérote de nouveau ses enregistrements à partir de {next} : "
                      "les {newer} enregistrements plus récents de ce boîtier ne pourront plus "
                      "être transmis. Ne restaurez une ancienne sauvegarde de la même passerelle "
                      "que si son état ici est perdu ou endommagé."),
    "restore.made_at": ("{at} UTC (accessgw {software})", "{at} UTC (accessgw {software})",
                        "{at} UTC (accessgw {software})", "{at} UTC (accessgw {software})"),
    "restore.waiting_title": ("Restoring {gateway}…", "Gjenoppretter {gateway} …",
                              "Gendanner {gateway} …", "Restauration de {gateway}…"),
    "restore.waiting": ("The gateway is stopping, putting the backup in place and starting "
                        "again. This page waits for it.",
                        "Gatewayen stopper, legger inn sikkerhetskopien og starter igjen. "
                        "Denne siden venter på den.",
                        "Gatewayen stopper, lægger sikkerhedskopien på plads og starter igen. "
                        "Denne side venter på den.",
                        "La passerelle s'arrête, met la sauvegarde en place et redémarre. "
                        "Cette page l'attend."),
    "restore.back_title": ("{gateway} is back", "{gateway} er tilbake", "{gateway} er tilbage",
                           "{gateway} est de retour"),
    "restore.back": ("This box is now {gateway} of {site}. Sign in with the installer password "
                     "of {gateway}.",
                     "Denne boksen er nå {gateway} i {site}. Logg inn med installatørpassordet "
                     "til {gateway}.",
                     "Denne boks er nu {gateway} i {site}. Log ind med installatørens "
                     "adgangskode til {gateway}.",
                     "Ce boîtier est maintenant {gateway} de {site}. Connectez-vous avec le mot "
                     "de passe installateur de {gateway}."),
    "restore.late_title": ("{gateway} has not come back yet",
                           "{gateway} har ikke kommet tilbake ennå",
                           "{gateway} er ikke kommet tilbage endnu",
                           "{gateway} n'est pas encore revenue"),
    "restore.late": ("Check the box: {journal}, or the output of {run}.",
                     "Sjekk boksen: {journal}, eller utdataene fra {run}.",
                     "Tjek boksen: {journal} eller output fra {run}.",
                     "Vérifiez le boîtier : {journal}, ou la sortie de {run}."),
    "restore.failed_status": ("A staged restore could not be applied ({at} UTC): the gateway "
                              "runs on its old state. {reason}",
                              "En forberedt gjenoppretting kunne ikke tas i bruk ({at} UTC): "
                              "gatewayen kjører på sin gamle tilstand. {reason}",
                              "En forberedt gendannelse kunne ikke anvendes ({at} UTC): "
                              "gatewayen kører på sin gamle tilstand. {reason}",
                              "Une restauration préparée n'a pas pu être appliquée ({at} UTC) : "
                              "la passerelle fonctionne sur son ancien état. {reason}"),
    "restore.last": ("Last restore: {gateway} from its backup of {created} UTC, applied "
                     "{applied} UTC. What this box held before is in {path}.",
                     "Siste gjenoppretting: {gateway} fra sikkerhetskopien av {created} UTC, "
                     "tatt i bruk {applied} UTC. Det boksen hadde før, ligger i {path}.",
                     "Seneste gendannelse: {gateway} fra sikkerhedskopien af {created} UTC, "
                     "anvendt {applied} UTC. Det, boksen havde før, ligger i {path}.",
                     "Dernière restauration : {gateway} depuis sa sauvegarde du {created} UTC, "
                     "appliquée le {applied} UTC. L'ancien contenu de ce boîtier est dans "
                     "{path}."),
    "js.restore_checking": ("Checking the backup… (this takes a few seconds)",
                            "Kontrollerer sikkerhetskopien … (dette tar noen sekunder)",
                            "Kontrollerer sikkerhedskopien … (det tager et par sekunder)",
                            "Vérification de la sauvegarde… (quelques secondes)"),
    "js.restore_refused": ("Not restored: {reason}", "Ikke gjenopprettet: {reason}",
                           "Ikke gendannet: {reason}", "Non restauré : {reason}"),
    "js.restore_upload_failed": ("Not restored: the upload failed ({error})",
                                 "Ikke gjenopprettet: opplastingen mislyktes ({error})",
                                 "Ikke gendannet: uploaden mislykkedes ({error})",
                                 "Non restauré : l'envoi a échoué ({error})"),
    # --- MQTT -----------------------------------------------------------------------------------
    "mqtt.heading": ("MQTT and the central system", "MQTT og sentralsystemet",
                     "MQTT og centralsystemet", "MQTT et système central"),
    "mqtt.help": ("Test the connection before saving. Uploaded certificates, keys and "
                  "passwords are kept in the gateway's state directory (0600), never shown "
                  "again.",
                  "Test tilkoblingen før du lagrer. Opplastede sertifikater, nøkler og passord "
                  "lagres i gatewayens tilstandsmappe (0600) og vises aldri igjen.",
                  "Test forbindelsen, før du gemmer. Uploadede certifikater, nøgler og "
                  "adgangskoder gemmes i gatewayens tilstandsmappe (0600) og vises aldrig igen.",
                  "Testez la connexion avant d'enregistrer. Les certificats, clés et mots de "
                  "passe envoyés sont conservés dans le dossier d'état de la passerelle (0600) "
                  "et ne sont plus jamais affichés."),
    "mqtt.enabled": ("Connect to the broker", "Koble til brokeren", "Forbind til brokeren",
                     "Se connecter au broker"),
    "mqtt.host": ("Broker host", "Brokerens vertsnavn", "Brokerens værtsnavn",
                  "Hôte du broker"),
    "mqtt.port": ("Port", "Port", "Port", "Port"),
    "mqtt.protocol": ("Protocol", "Protokoll", "Protokol", "Protocole"),
    "mqtt.username": ("Username (optional)", "Brukernavn (valgfritt)", "Brugernavn (valgfrit)",
                      "Nom d'utilisateur (facultatif)"),
    "mqtt.password_file": ("Password file", "Passordfil", "Adgangskodefil",
                           "Fichier du mot de passe"),
    "mqtt.tls": ("TLS", "TLS", "TLS", "TLS"),
    "mqtt.ca": ("CA certificate", "CA-sertifikat", "CA-certifikat", "Certificat de l'AC"),
    "mqtt.cert": ("Client certificate", "Klientsertifikat", "Klientcertifikat",
                  "Certificat client"),
    "mqtt.key": ("Client key", "Klientnøkkel", "Klientnøgle", "Clé client"),
    "mqtt.public_key": ("Central system public key (base64)",
                        "Sentralsystemets offentlige nøkkel (base64)",
                        "Centralsystemets offentlige nøgle (base64)",
                        "Clé publique du système central (base64)"),
    "mqtt.test": ("Test connection", "Test tilkoblingen", "Test forbindelsen",
                  "Tester la connexion"),
    "mqtt.save": ("Save and apply", "Lagre og bruk", "Gem og anvend", "Enregistrer et appliquer"),
    # --- the JavaScript's words (sent with each page) ---------------------------------------
    "js.failed": ("failed", "mislyktes", "mislykkedes", "échec"),
    "js.present_card": ("Present the card now…", "Hold fram kortet nå …", "Hold kortet op nu …",
                        "Présentez le badge maintenant…"),
    "js.working": ("Working…", "Jobber …", "Arbejder …", "En cours…"),
    "js.no_answer": ("The gateway did not answer: {error}", "Gatewayen svarte ikke: {error}",
                     "Gatewayen svarede ikke: {error}",
                     "La passerelle n'a pas répondu : {error}"),
    "js.card_reader": ("reader {reader}", "leser {reader}", "læser {reader}",
                       "lecteur {reader}"),
    "js.belongs_to": ("Belongs to {member}", "Tilhører {member}", "Tilhører {member}",
                      "Appartient à {member}"),
    "js.not_member": ("Not in the member set", "Finnes ikke i medlemsregisteret",
                      "Findes ikke i medlemsregistret", "Absent de la liste des membres"),
    "js.took": ("time to decide", "tid brukt på avgjørelsen", "tid brugt på afgørelsen",
                "temps de décision"),
    "js.lost": ("The connection to the gateway was lost; retrying.",
                "Forbindelsen til gatewayen ble brutt. Prøver igjen.",
                "Forbindelsen til gatewayen blev afbrudt. Prøver igen.",
                "La connexion à la passerelle a été perdue ; nouvelle tentative."),
    "js.no_news": ("No news from the gateway for {seconds} s.",
                   "Ikke noe nytt fra gatewayen på {seconds} s.",
                   "Intet nyt fra gatewayen i {seconds} s.",
                   "Aucune nouvelle de la passerelle depuis {seconds} s."),
    "js.line": ("line {line}", "linje {line}", "linje {line}", "ligne {line}"),
    "js.applying": ("Checking and applying…", "Kontrollerer og tar i bruk …",
                    "Kontrollerer og tager i brug …", "Vérification et application…"),
    "js.remove": ("Remove {what}?", "Fjerne {what}?", "Fjern {what}?", "Supprimer {what} ?"),
    "js.backing_up": ("Making the backup…", "Lager sikkerhetskopi …",
                      "Laver sikkerhedskopi …", "Sauvegarde en cours…"),
    "js.backup_done": ("Backup downloaded: keep it off the box, and the passphrase apart "
                       "from it.",
                       "Sikkerhetskopien er lastet ned. Oppbevar den utenfor boksen, og "
                       "passfrasen et annet sted enn kopien.",
                       "Sikkerhedskopien er hentet. Opbevar den uden for boksen, og "
                       "adgangssætningen et andet sted end kopien.",
                       "Sauvegarde téléchargée : gardez-la hors du boîtier, et la phrase "
                       "secrète ailleurs que la sauvegarde."),
    "js.connecting": ("Connecting…", "Kobler til …", "Forbinder …", "Connexion…"),
    # --- codes the gateway reports (FAMILIES) ---------------------------------------------
    "mode.normal": ("normal", "normal", "normal", "normal"),
    "mode.unlock": ("unlocked", "holdt åpen", "holdt åben", "ouverture permanente"),
    "mode.lockdown": ("lockdown", "sperret", "spærret", "verrouillage"),
    "lock.locked": ("locked", "låst", "låst", "verrouillée"),
    "lock.unlocked": ("unlocked", "åpen", "låst op", "déverrouillée"),
    "lock.unknown": ("unknown", "ukjent", "ukendt", "inconnue"),
    "contact.open": ("open", "åpen", "åben", "ouverte"),
    "contact.closed": ("closed", "lukket", "lukket", "fermée"),
    "contact.unknown": ("unknown", "ukjent", "ukendt", "inconnu"),
    "dir.in": ("in", "inn", "ind", "entrée"),
    "dir.out": ("out", "ut", "ud", "sortie"),
    "doorkind.door": ("door", "dør", "dør", "porte"),
    "doorkind.turnstile": ("turnstile", "vendekors", "drejekors", "tourniquet"),
    "decision.granted": ("granted", "godkjent", "godkendt", "autorisé"),
    "decision.denied": ("denied", "avvist", "afvist", "refusé"),
    "credkind.nfc": ("NFC card", "NFC-kort", "NFC-kort", "carte NFC"),
    "credkind.code": ("QR/barcode", "QR-/strekkode", "QR-/stregkode", "QR/code-barres"),
    "credkind.pass": ("phone pass", "mobilpass", "mobilpas", "pass mobile"),
    "credkind.phone": ("phone", "telefon", "telefon", "téléphone"),
    "role.member": ("member", "medlem", "medlem", "membre"),
    "role.staff": ("staff", "ansatt", "medarbejder", "personnel"),
    "contract.recurring": ("recurring", "løpende", "løbende", "récurrent"),
    "contract.fixed": ("fixed term", "tidsbegrenset", "tidsbegrænset", "durée déterminée"),
    "contract.clipcard": ("clip card", "klippekort", "klippekort", "carte à entrées"),
    "action.pulse": ("relay pulse", "relépuls", "relæpuls", "impulsion relais"),
    "action.door_test": ("door test", "dørtest", "dørtest", "test de porte"),
    "action.resync": ("resync", "ny synkronisering", "ny synkronisering", "resynchronisation"),
    "action.next_card": ("next card", "neste kort", "næste kort", "badge suivant"),
    "action.osdp_install": ("OSDP install mode", "OSDP-installasjon", "OSDP-installation",
                            "installation OSDP"),
    "action.backup": ("backup", "sikkerhetskopi", "sikkerhedskopi", "sauvegarde"),
    "action.password_set": ("password set", "passord satt", "adgangskode sat",
                            "mot de passe défini"),
    "action.restore": ("restore", "gjenoppretting", "gendannelse", "restauration"),
    "row.event_detail": ("{event}: {detail}", "{event}: {detail}", "{event}: {detail}",
                          "{event} : {detail}"),
    "action.restore_applied": ("restore applied", "gjenoppretting tatt i bruk",
                               "gendannelse anvendt", "restauration appliquée"),
    "action.restore_failed": ("restore failed", "gjenoppretting mislyktes",
                              "gendannelse mislykkedes", "échec de la restauration"),
    "event.started": ("Gateway started", "Gatewayen startet", "Gatewayen startede",
                      "Passerelle démarrée"),
    "event.stopping": ("Gateway stopping", "Gatewayen stopper", "Gatewayen stopper",
                       "Arrêt de la passerelle"),
    "event.reader_online": ("Reader online", "Leser tilkoblet", "Læser tilsluttet",
                            "Lecteur en ligne"),
    "event.reader_offline": ("Reader offline", "Leser frakoblet", "Læser ikke tilsluttet",
                             "Lecteur hors ligne"),
    "event.board_online": ("Relay board online", "Relékort tilkoblet", "Relækort tilsluttet",
                           "Carte relais en ligne"),
    "event.board_offline": ("Relay board unreachable", "Relékort utilgjengelig",
                            "Relækort kan ikke nås", "Carte relais injoignable"),
    "event.tamper": ("Reader tamper switch", "Sabotasjebryter på leser",
                     "Sabotagekontakt på læser", "Contact d'autoprotection du lecteur"),
    "event.reader_power": ("Reader power", "Strøm til leser", "Strøm til læser",
                           "Alimentation du lecteur"),
    "event.reader_keypad": ("Keys pressed at a reader", "Taster trykket på leser",
                            "Taster trykket på læser", "Touches appuyées sur un lecteur"),
    "event.door_closed": ("Door closed", "Døra lukket", "Døren lukket", "Porte refermée"),
    "event.unauthorised_passage": ("Passage without a grant", "Passering uten tillatelse",
                                   "Passage uden tilladelse", "Passage sans autorisation"),
    "event.config_changed": ("Configuration changed", "Konfigurasjonen endret",
                             "Konfigurationen ændret", "Configuration modifiée"),
    "event.duplicate_credential": ("Credential held by two members",
                                   "Kort eller kode hos to medlemmer",
                                   "Kort eller kode hos to medlemmer",
                                   "Identifiant attribué à deux membres"),
    "event.disk_full": ("Disk full: decisions refused", "Disken er full: adgang avvist",
                        "Disken er fuld: adgang afvist", "Disque plein : accès refusés"),
    "event.journal_unwritable": ("Journal cannot be written", "Journalen kan ikke skrives",
                                 "Journalen kan ikke skrives", "Journal impossible à écrire"),
    "event.journal_filling": ("Journal filling up (not yet sent)",
                              "Journalen fylles opp (ikke sendt ennå)",
                              "Journalen er ved at blive fyldt (ikke sendt endnu)",
                              "Journal presque plein (pas encore envoyé)"),
    "event.journal_drained": ("Journal sent and emptied", "Journalen er sendt og tømt",
                              "Journalen er sendt og tømt", "Journal envoyé et vidé"),
    "event.journal_full": ("Journal was full: decisions refused",
                           "Journalen var full: adgang avvist",
                           "Journalen var fuld: adgang afvist",
                           "Journal plein : accès refusés"),
    "event.relay_fault": ("Relay fault", "Feil på relé", "Fejl på relæ", "Défaut de relais"),
    "event.lockdown": ("Lockdown", "Sperring", "Spærring", "Verrouillage"),
    "event.door_forced": ("Door forced open", "Døra ble brutt opp", "Døren blev brudt op",
                          "Porte forcée"),
    "event.door_held_open": ("Door held open", "Døra står åpen for lenge",
                             "Døren står åben for længe", "Porte restée ouverte"),
    "event.emergency_release": ("Emergency release (fire)", "Nødåpning (brann)",
                                "Nødåbning (brand)", "Déverrouillage d'urgence (incendie)"),
    "event.emergency_cleared": ("Emergency release ended", "Nødåpning avsluttet",
                                "Nødåbning afsluttet", "Fin du déverrouillage d'urgence"),
    "event.installer_action": ("Installer action", "Handling av installatør",
                               "Handling fra installatør", "Action de l'installateur"),
    "event.clock_unsynced": ("Clock not synced", "Klokka er ikke synkronisert",
                             "Uret er ikke synkroniseret", "Horloge non synchronisée"),
    "event.ticket_double_use": ("Ticket used twice", "Billett brukt to ganger",
                                "Billet brugt to gange", "Billet utilisé deux fois"),
    "event.bad_message": ("Refused message", "Avvist melding", "Afvist meddelelse",
                          "Message refusé"),
    "event.component_failed": ("A part of the gateway failed", "En del av gatewayen feilet",
                               "En del af gatewayen fejlede",
                               "Une partie de la passerelle a échoué"),
}
# fmt: on

# French puts a space before : ; ? ! and inside « »: a no-break one, so a phone never
# starts a line with the sign
_FRENCH_SPACES = re.compile(r" ([:;?!»])|(«) ")


def _typeset(lang: str, text: str) -> str:
    if lang != "fr":
        return text
    return _FRENCH_SPACES.sub(lambda m: f"\u00a0{m[1]}" if m[1] else f"{m[2]}\u00a0", text)


_BY_LANGUAGE: dict[str, dict[str, str]] = {
    lang: {key: _typeset(lang, row[i]) for key, row in MESSAGES.items()}
    for i, lang in enumerate(LANGUAGES)
}


def language_of(value: object) -> str:
    """A language this UI speaks: ``value`` if it is one, else the default (en)."""
    return value if isinstance(value, str) and value in _BY_LANGUAGE else DEFAULT_LANGUAGE


def t(language: str, key: str, **values: object) -> str:
    """The text of ``key`` in ``language`` with its ``{placeholders}`` filled in."""
    words = _BY_LANGUAGE[language_of(language)]
    template = words.get(key) or _BY_LANGUAGE[DEFAULT_LANGUAGE].get(key, key)
    return template.format(**values) if values else template


def say(language: str, family: str, code: object) -> str:
    """A reported code in words (``say("nb", "mode", "lockdown")`` -> ``sperret``)."""
    text = str(code)
    if text in FAMILIES.get(family, ()):
        return t(language, f"{family}.{text}")
    return text.replace("_", " ")


def number(language: str, value: float, decimals: int = 0) -> str:
    """``value`` written as the language writes numbers: ``1,234.5``, ``1 234,5``, ``1.234,5``."""
    text = f"{value:,.{decimals}f}"  # 1,234.5
    group, point = {"en": (",", "."), "da": (".", ",")}.get(language, ("\u00a0", ","))
    return text.replace(",", "\0").replace(".", point).replace("\0", group)


def seconds(language: str, value: float) -> str:
    """A number of seconds as shown in a sentence (no needless decimals: ``1``, ``0,5``)."""
    return number(language, value, 0 if float(value).is_integer() else 1)


def js_words(language: str) -> Mapping[str, str]:
    """What the page's JavaScript needs: its own ids and the code families it shows."""
    prefixes = ("js.", *(f"{family}." for family in JS_FAMILIES))
    words = _BY_LANGUAGE[language_of(language)]
    return {key: text for key, text in words.items() if key.startswith(prefixes)}
