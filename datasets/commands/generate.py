"""Generates the command-parsing task: spoken-style requests to an on-device assistant, each paired with
the intent and slots as one line of JSON, written as prompt/completion JSON lines.

    python3 datasets/commands/generate.py            # writes train.jsonl, validation.jsonl, test.jsonl here
    python3 datasets/commands/generate.py --tuning DIR   # a split for choosing a recipe without the test split

Deterministic (seeded; standard library only). Every intent has several phrasing templates; the last two
of each intent are held out and used only by the test split, so test accuracy measures generalisation to
unseen phrasings, not recall. Train and validation share the other templates but not examples. Numbers
are written as digits or words, names and places vary, and some requests carry typos.

The tuning split asks the test split's question one level down, so a recipe can be chosen without looking
at test.jsonl: of the five templates train.jsonl uses, one per intent (TUNING_TEMPLATE) is held out into
DIR/dev.jsonl and DIR/train.jsonl has the other four. test.jsonl's templates appear in neither.
"""
import json
import random
import sys
from pathlib import Path

SEED = 20261127
SIZES = {"train": 4000, "validation": 300, "test": 500}
HELD_OUT_TEMPLATES = 2
MORE_SEED = 20261207
MORE_TRAIN = 4000     # requests from MORE_TEMPLATES' training phrasings, shuffled into train.jsonl
NOVEL_SIZE = 300      # requests from MORE_TEMPLATES' novel phrasings: novel.jsonl
TUNING_SEED = 20261206
TUNING_SIZES = {"train": 4000, "dev": 300}
TUNING_TEMPLATE = 2   # index among the seen templates of the one each intent holds out for dev.jsonl

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety"}
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam", "Maya",
         "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Vera", "Wei", "Yusuf", "Zoe", "mum", "dad"]
ROOMS = ["living room", "kitchen", "bedroom", "bathroom", "office", "hallway", "garage", "dining room"]
COLORS = ["red", "blue", "green", "warm white", "purple", "orange", "pink", "yellow"]
CITIES = ["Lisbon", "Paris", "Berlin", "Tokyo", "Nairobi", "Lima", "Toronto", "Oslo", "Madrid", "Cairo", "Seoul", "Dublin"]
DAYS = ["today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
ARTISTS = ["Nina Simone", "the Beatles", "Miles Davis", "Bach", "Fela Kuti", "Radiohead", "Adele", "Bob Marley"]
GENRES = ["jazz", "classical music", "rock", "reggae", "lo-fi", "blues", "pop", "folk"]
ITEMS = ["milk", "eggs", "bread", "coffee", "apples", "rice", "olive oil", "tomatoes", "butter", "tea", "onions"]
MESSAGES = ["I'm running ten minutes late", "see you at the station", "call me when you land", "dinner is ready",
            "I'll be home soon", "don't forget the keys", "happy birthday", "can you pick up the kids",
            "the meeting moved to three", "thanks for today"]
TASKS = ["call the dentist", "water the plants", "take the medicine", "pay the rent", "book the tickets",
         "send the report", "feed the cat", "renew the passport"]
PLACES = ["the airport", "the train station", "work", "home", "the nearest pharmacy", "the city centre", "the hospital"]


def number_words(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        t, o = n - n % 10, n % 10
        return TENS[t] + ("" if o == 0 else "-" + ONES[o])
    return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))


def number(n: int, rng: random.Random) -> str:
    return number_words(n) if rng.random() < 0.5 else str(n)


def clock(rng: random.Random) -> tuple[str, str]:
    """A spoken time and its 24-hour HH:MM value."""
    hour = rng.randint(1, 12)
    minute = rng.choice([0, 0, 5, 10, 15, 20, 30, 30, 40, 45, 50])
    pm = rng.random() < 0.4
    h24 = hour % 12 + (12 if pm else 0)
    value = f"{h24:02d}:{minute:02d}"
    if rng.random() < 0.5:
        spoken = str(hour) if minute == 0 else f"{hour}:{minute:02d}"
    else:
        spoken = number_words(hour) + ("" if minute == 0 else " " + ("oh " + ONES[minute] if minute < 10 else number_words(minute)))
    if pm:
        spoken += rng.choice([" pm", " in the evening", " p.m."]) if hour < 6 or rng.random() < 0.5 else " pm"
    elif rng.random() < 0.5:
        spoken += rng.choice([" am", " in the morning", " a.m."])
    return spoken, value


def typo(text: str, rng: random.Random, protected: list[str]) -> str:
    """One swapped, dropped or doubled letter in a word that is not a slot value."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha() and not any(w in p for p in protected)]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.choice(["swap", "drop", "double"])
    if kind == "swap":
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == "drop":
        w = w[:j] + w[j + 1:]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


# Each intent: a function drawing slots, and its phrasing templates. The last HELD_OUT_TEMPLATES
# templates of each intent appear only in the test split.
def set_alarm(rng):
    spoken, value = clock(rng)
    day = rng.choice(DAYS[:3] + DAYS[3:])
    return {"time": spoken, "day": day}, {"intent": "set_alarm", "time": value, "day": day}, [
        "wake me at {time} {day}", "set an alarm for {time} {day}", "alarm at {time} {day} please",
        "i need to be up at {time} {day}", "can you set my alarm to {time} {day}",
        "{day} wake me up at {time}", "get me up at {time} {day}"]


def set_timer(rng):
    n = rng.choice([1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 45, 90])
    unit = rng.choice(["minutes", "minutes", "seconds", "hours"]) if n > 1 else rng.choice(["minute", "hour"])
    base = unit.rstrip("s") + "s"
    return {"n": number(n, rng), "unit": unit}, {"intent": "set_timer", "duration": n, "unit": base}, [
        "set a timer for {n} {unit}", "timer {n} {unit}", "start a {n} {unit} timer",
        "count down {n} {unit}", "remind me in {n} {unit}",
        "give me {n} {unit} on the clock", "let me know when {n} {unit} are up"]


def send_message(rng):
    name, msg = rng.choice(NAMES), rng.choice(MESSAGES)
    return {"name": name, "msg": msg}, {"intent": "send_message", "contact": name, "text": msg}, [
        "text {name} {msg}", "send a message to {name} saying {msg}", "tell {name} {msg}",
        "message {name}: {msg}", "can you text {name} that {msg}",
        "shoot {name} a note saying {msg}", "write to {name} {msg}"]


def call_contact(rng):
    name = rng.choice(NAMES)
    return {"name": name}, {"intent": "call", "contact": name}, [
        "call {name}", "phone {name}", "give {name} a ring", "ring {name} please", "dial {name}",
        "get {name} on the phone", "i want to talk to {name}"]


def set_lights(rng):
    room = rng.choice(ROOMS)
    if rng.random() < 0.6:
        level = rng.choice([0, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100])
        return {"room": room, "level": number(level, rng)}, {"intent": "set_lights", "room": room, "brightness": level}, [
            "set the {room} lights to {level} percent", "dim the {room} to {level} percent",
            "{room} lights at {level} percent", "turn the {room} lights to {level} percent",
            "make the {room} {level} percent bright", "put the {room} lamps on {level} percent",
            "i want the {room} at {level} percent"]
    color = rng.choice(COLORS)
    return {"room": room, "level": color}, {"intent": "set_lights", "room": room, "color": color}, [
        "set the {room} lights to {level}", "make the {room} lights {level}", "{room} lights {level}",
        "turn the {room} {level}", "change the {room} lights to {level}",
        "paint the {room} {level} with the lights", "i want {level} light in the {room}"]


def set_thermostat(rng):
    t = rng.randint(16, 26)
    return {"t": number(t, rng)}, {"intent": "set_temperature", "celsius": t}, [
        "set the heating to {t} degrees", "make it {t} degrees in here", "thermostat to {t}",
        "warm the house to {t} degrees", "i want it at {t} degrees",
        "bring the temperature to {t} degrees", "keep the flat at {t} degrees"]


def play_music(rng):
    if rng.random() < 0.5:
        artist = rng.choice(ARTISTS)
        return {"what": artist}, {"intent": "play_music", "artist": artist}, [
            "play {what}", "put on some {what}", "i want to hear {what}", "play something by {what}",
            "start {what} please", "queue up {what}", "let's listen to {what}"]
    genre = rng.choice(GENRES)
    return {"what": genre}, {"intent": "play_music", "genre": genre}, [
        "play {what}", "put on some {what}", "i want to hear {what}", "play some {what}",
        "start {what} please", "queue up {what}", "let's listen to {what}"]


def weather(rng):
    city, day = rng.choice(CITIES), rng.choice(DAYS[:2])
    return {"city": city, "day": day}, {"intent": "weather", "city": city, "day": day}, [
        "what's the weather in {city} {day}", "will it rain in {city} {day}", "weather for {city} {day}",
        "how hot is it in {city} {day}", "do i need an umbrella in {city} {day}",
        "forecast {city} {day}", "is it sunny in {city} {day}"]


def reminder(rng):
    task = rng.choice(TASKS)
    spoken, value = clock(rng)
    day = rng.choice(DAYS)
    return {"task": task, "time": spoken, "day": day}, {"intent": "reminder", "task": task, "time": value, "day": day}, [
        "remind me to {task} at {time} {day}", "{day} at {time} remind me to {task}",
        "set a reminder to {task} {day} at {time}", "don't let me forget to {task} at {time} {day}",
        "i have to {task} {day} at {time}, remind me", "note to self: {task} at {time} {day}",
        "ping me {day} at {time} to {task}"]


def shopping(rng):
    item, n = rng.choice(ITEMS), rng.randint(1, 6)
    return {"item": item, "n": number(n, rng)}, {"intent": "add_to_list", "item": item, "quantity": n}, [
        "add {n} {item} to the shopping list", "put {n} {item} on my list", "we need {n} {item}",
        "shopping list: {n} {item}", "add {item}, {n} of them, to the list",
        "don't forget {n} {item} on the list", "i'm out of {item}, add {n}"]


def navigate(rng):
    place = rng.choice(PLACES)
    return {"place": place}, {"intent": "navigate", "destination": place}, [
        "take me to {place}", "directions to {place}", "navigate to {place}", "how do i get to {place}",
        "route to {place} please", "get me to {place}", "show me the way to {place}"]


def volume(rng):
    level = rng.choice([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    return {"level": number(level, rng)}, {"intent": "set_volume", "level": level}, [
        "volume {level}", "set the volume to {level}", "turn it to {level} percent volume",
        "make it {level} percent loud", "sound at {level}", "change the volume to {level} percent",
        "put the volume on {level}"]


# More phrasings for training, and phrasings for the novel split alone (neither in train.jsonl nor in test.jsonl),
# by intent (and, where an intent has two kinds of slots, by the second key of its JSON).
MORE_TEMPLATES = {
    "set_alarm": {
        "train": ["alarm for {time} {day}", "please wake me {day} at {time}", "{time} {day}, set an alarm",
                  "make sure i'm awake at {time} {day}", "i have to wake up at {time} {day}"],
        "novel": ["rouse me at {time} {day}", "i must be awake by {time} {day}", "alarm clock {time} {day}"]},
    "set_timer": {
        "train": ["{n} {unit} timer please", "time {n} {unit} for me", "set the timer to {n} {unit}",
                  "start counting {n} {unit}", "a timer of {n} {unit}"],
        "novel": ["countdown of {n} {unit}", "begin a {n} {unit} countdown", "time me for {n} {unit}"]},
    "send_message": {
        "train": ["send {name} the message {msg}", "tell {name} that {msg}", "text to {name}: {msg}",
                  "let {name} know {msg}", "message for {name}: {msg}"],
        "novel": ["drop {name} a line: {msg}", "pass a message to {name}: {msg}", "send {name} a text, {msg}"]},
    "call": {
        "train": ["call up {name}", "make a call to {name}", "phone call to {name}", "ring up {name}",
                  "can you call {name} for me"],
        "novel": ["place a call to {name}", "call {name} now", "phone {name} for me"]},
    "set_lights/brightness": {
        "train": ["{room} brightness {level} percent", "lights in the {room} to {level} percent",
                  "can you dim the {room} lights to {level} percent", "brightness of the {room} at {level} percent",
                  "set {room} lighting to {level} percent"],
        "novel": ["{room} lamps to {level} percent", "brightness {level} percent in the {room}",
                  "adjust the {room} light to {level} percent"]},
    "set_lights/color": {
        "train": ["{level} lights in the {room}", "switch the {room} lights to {level}", "can the {room} be {level}",
                  "make the {room} glow {level}", "{room} lighting {level}"],
        "novel": ["{room} light colour {level}", "tint the {room} {level}", "{level} lighting for the {room}"]},
    "set_temperature": {
        "train": ["heat the place to {t} degrees", "temperature {t}", "can you set it to {t} degrees",
                  "adjust the thermostat to {t} degrees", "{t} degrees please"],
        "novel": ["heating at {t} degrees", "raise the temperature to {t} degrees", "set thermostat {t} degrees"]},
    "play_music/artist": {
        "train": ["play me some {what}", "can you play {what}", "music by {what}", "put {what} on",
                  "i'd like to hear {what}"],
        "novel": ["stream {what}", "some {what} would be nice", "throw on {what}"]},
    "play_music/genre": {
        "train": ["play me some {what}", "can you play {what}", "some {what} please", "put {what} on",
                  "i'd like to hear {what}"],
        "novel": ["stream {what}", "some {what} would be nice", "throw on {what}"]},
    "weather": {
        "train": ["weather {city} {day}", "what will the weather be like in {city} {day}",
                  "is it going to be cold in {city} {day}", "how's the weather in {city} {day}",
                  "tell me the weather for {city} {day}"],
        "novel": ["what's it like in {city} {day}", "weather report for {city} {day}",
                  "should i take a jacket in {city} {day}"]},
    "reminder": {
        "train": ["remind me {day} at {time} to {task}", "i need a reminder to {task} at {time} {day}",
                  "at {time} {day} remind me to {task}", "make sure i {task} at {time} {day}",
                  "reminder: {task}, {day} at {time}"],
        "novel": ["alert me to {task} at {time} {day}", "{task} at {time} {day}, remind me",
                  "can you remind me {day} at {time} to {task}"]},
    "add_to_list": {
        "train": ["{n} {item} on the shopping list", "put {item} on the list, {n}", "buy {n} {item}",
                  "list {n} {item}", "get {n} {item} on the shopping list"],
        "novel": ["add {n} {item} to groceries", "grocery list: {n} {item}", "pick up {n} {item}, add it to the list"]},
    "navigate": {
        "train": ["drive to {place}", "i need to go to {place}", "find a route to {place}", "where is {place}",
                  "lead me to {place}"],
        "novel": ["head to {place}", "navigation to {place}", "i'm going to {place}, guide me"]},
    "set_volume": {
        "train": ["volume to {level} percent", "set the sound to {level}", "adjust volume to {level}",
                  "{level} percent volume please", "make the volume {level}"],
        "novel": ["sound level {level}", "volume at {level} percent", "adjust the sound to {level} percent"]},
}


def template_key(target: dict) -> str:
    """The MORE_TEMPLATES key of a JSON target."""
    if target["intent"] in ("set_lights", "play_music"):
        return target["intent"] + "/" + list(target)[2 if target["intent"] == "set_lights" else 1]
    return target["intent"]


INTENTS = [set_alarm, set_timer, send_message, call_contact, set_lights, set_thermostat, play_music, weather,
           reminder, shopping, navigate, volume]


def example(rng: random.Random, held_out: bool, tuning: str | None = None, more: str | None = None) -> dict:
    """One request. held_out: from the test split's templates. tuning: "train" or "dev" for the tuning split,
    which divides the seen templates instead. more: "train" or "novel", from MORE_TEMPLATES instead."""
    slots, target, templates = rng.choice(INTENTS)(rng)
    pool = templates[-HELD_OUT_TEMPLATES:] if held_out else templates[:-HELD_OUT_TEMPLATES]
    if more:
        pool = MORE_TEMPLATES[template_key(target)][more]
    if tuning == "dev":
        pool = [pool[TUNING_TEMPLATE]]
    elif tuning == "train":
        pool = pool[:TUNING_TEMPLATE] + pool[TUNING_TEMPLATE + 1:]
    text = rng.choice(pool).format(**slots)
    if rng.random() < 0.15:
        text = typo(text, rng, [str(v) for v in slots.values()])
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return {"prompt": f"Command: {text}\nJSON:", "completion": " " + json.dumps(target, separators=(",", ":"))}


def draw(rng: random.Random, size: int, seen: set, **kind) -> list[dict]:
    """`size` requests whose prompts are not in `seen` (which then holds them too)."""
    rows = []
    while len(rows) < size:
        row = example(rng, **kind)
        if row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        rows.append(row)
    return rows


def main() -> None:
    tuning = len(sys.argv) == 3 and sys.argv[1] == "--tuning"
    if len(sys.argv) != 1 and not tuning:
        sys.exit("usage: generate.py [--tuning DIR]")
    here = Path(sys.argv[2]) if tuning else Path(__file__).resolve().parent
    here.mkdir(parents=True, exist_ok=True)
    rng = random.Random(TUNING_SEED if tuning else SEED)
    seen = set()
    splits = {split: draw(rng, size, seen, held_out=(split == "test"), tuning=split if tuning else None)
              for split, size in (TUNING_SIZES if tuning else SIZES).items()}
    # The further phrasings come from their own generator, so the splits above stay as they were without them.
    more = random.Random(MORE_SEED)
    splits["train"] += draw(more, MORE_TRAIN, seen, held_out=False, more="train")
    more.shuffle(splits["train"])
    splits["novel"] = draw(more, NOVEL_SIZE, seen, held_out=False, more="novel")
    for split, rows in splits.items():
        path = here / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} examples")


if __name__ == "__main__":
    main()
