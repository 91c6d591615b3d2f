"""Generates the command-parsing task: spoken-style requests to an on-device assistant, each paired with
the intent and slots as one line of JSON, written as prompt/completion JSON lines.

    python3 datasets/commands/generate.py            # writes train.jsonl, validation.jsonl, test.jsonl here

Deterministic (seeded; standard library only). Every intent has several phrasing templates; the last two
of each intent are held out and used only by the test split, so test accuracy measures generalisation to
unseen phrasings, not recall. Train and validation share the other templates but not examples. Numbers
are written as digits or words, names and places vary, and some requests carry typos.
"""
import json
import random
from pathlib import Path

SEED = 20261127
SIZES = {"train": 4000, "validation": 300, "test": 500}
HELD_OUT_TEMPLATES = 2

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


INTENTS = [set_alarm, set_timer, send_message, call_contact, set_lights, set_thermostat, play_music, weather,
           reminder, shopping, navigate, volume]


def example(rng: random.Random, held_out: bool) -> dict:
    slots, target, templates = rng.choice(INTENTS)(rng)
    pool = templates[-HELD_OUT_TEMPLATES:] if held_out else templates[:-HELD_OUT_TEMPLATES]
    text = rng.choice(pool).format(**slots)
    if rng.random() < 0.15:
        text = typo(text, rng, [str(v) for v in slots.values()])
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return {"prompt": f"Command: {text}\nJSON:", "completion": " " + json.dumps(target, separators=(",", ":"))}


def main() -> None:
    here = Path(__file__).resolve().parent
    rng = random.Random(SEED)
    seen = set()
    for split, size in SIZES.items():
        rows = []
        while len(rows) < size:
            row = example(rng, held_out=(split == "test"))
            if row["prompt"] in seen:
                continue
            seen.add(row["prompt"])
            rows.append(row)
        path = here / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} examples")


if __name__ == "__main__":
    main()
