"""The phrases of the synthetic Fluent-Speech-Commands-like corpus.

Written for this project: six domains, each phrase with the (action, object,
location) intent that FSC's CSV columns carry. `domain_of` maps an intent to
its domain and works on the real corpus's labels too.
"""

DOMAINS = ["Lighting", "Heat", "Volume", "Bring", "Language", "Music"]
ROOMS = ["kitchen", "bedroom", "washroom"]


def _lighting():
    out = []
    for action, verbs in (("activate", ["turn on", "switch on"]), ("deactivate", ["turn off", "switch off"])):
        for verb in verbs:
            out.append((f"{verb} the lights", action, "lights", "none"))
            out.append((f"{verb} the lamp", action, "lamp", "none"))
            for room in ROOMS:
                out.append((f"{verb} the lights in the {room}", action, "lights", room))
        word = "on" if action == "activate" else "off"
        out.append((f"lights {word}", action, "lights", "none"))
        out.append((f"kitchen lights {word}", action, "lights", "kitchen"))
    out.append(("it is too dark in here", "activate", "lights", "none"))
    out.append(("bedroom lights off please", "deactivate", "lights", "bedroom"))
    return out


def _heat():
    out = []
    for action, verbs in (("increase", ["turn up", "increase"]), ("decrease", ["turn down", "decrease"])):
        for verb in verbs:
            out.append((f"{verb} the heating", action, "heat", "none"))
            out.append((f"{verb} the temperature", action, "heat", "none"))
            for room in ROOMS:
                out.append((f"{verb} the heat in the {room}", action, "heat", room))
    out += [("make it warmer", "increase", "heat", "none"), ("make it cooler", "decrease", "heat", "none"),
            ("it is too cold in here", "increase", "heat", "none"),
            ("it is too hot in here", "decrease", "heat", "none")]
    return out


def _volume():
    out = []
    for action, verbs in (("increase", ["turn up", "increase", "raise"]),
                          ("decrease", ["turn down", "decrease", "lower"])):
        for verb in verbs:
            out.append((f"{verb} the volume", action, "volume", "none"))
            out.append((f"{verb} the sound", action, "volume", "none"))
    out += [("make it louder", "increase", "volume", "none"), ("make it quieter", "decrease", "volume", "none"),
            ("louder please", "increase", "volume", "none"), ("quieter please", "decrease", "volume", "none"),
            ("i can not hear that", "increase", "volume", "none"), ("that is too loud", "decrease", "volume", "none"),
            ("mute the sound", "deactivate", "volume", "none"), ("unmute the sound", "activate", "volume", "none"),
            ("volume up", "increase", "volume", "none"), ("volume down", "decrease", "volume", "none"),
            ("pump it up", "increase", "volume", "none"), ("keep it down", "decrease", "volume", "none")]
    return out


def _bring():
    out = []
    for obj in ("newspaper", "juice", "socks", "shoes"):
        out += [(f"bring me the {obj}", "bring", obj, "none"), (f"bring me my {obj}", "bring", obj, "none"),
                (f"get me the {obj}", "bring", obj, "none"), (f"fetch my {obj}", "bring", obj, "none"),
                (f"go get the {obj}", "bring", obj, "none"), (f"i need my {obj}", "bring", obj, "none")]
    return out


def _language():
    out = []
    for obj in ("Chinese", "Korean", "English", "German"):
        out += [(f"change the language to {obj}", "change language", obj, "none"),
                (f"switch the language to {obj}", "change language", obj, "none"),
                (f"set the language to {obj}", "change language", obj, "none"),
                (f"use {obj}", "change language", obj, "none"),
                (f"speak {obj}", "change language", obj, "none"),
                (f"i want {obj}", "change language", obj, "none")]
    return out


def _music():
    out = []
    for action, phrases in (("activate", ["play the music", "play some music", "start the music",
                                          "turn on the music", "put on some music", "music on",
                                          "i want to hear music", "resume the music", "play a song",
                                          "start playing music", "switch on the music", "begin the music"]),
                            ("deactivate", ["stop the music", "pause the music", "turn off the music",
                                            "music off", "switch off the music", "no more music",
                                            "end the music", "kill the music", "stop playing music",
                                            "silence the music", "halt the music", "cut the music"])):
        out += [(p, action, "music", "none") for p in phrases]
    return out


PHRASES = {"Lighting": _lighting(), "Heat": _heat(), "Volume": _volume(), "Bring": _bring(),
           "Language": _language(), "Music": _music()}


def domain_of(action, obj):
    """The paper's domain of an FSC intent."""
    if action == "bring":
        return "Bring"
    if action == "change language":
        return "Language"
    return {"lights": "Lighting", "lamp": "Lighting", "heat": "Heat", "volume": "Volume",
            "music": "Music"}.get(obj)
