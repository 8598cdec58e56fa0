"""The DomainNet suite: 345 object classes in six styles, with the official train/test lists.

Layout (``<data_root>`` is ``--data-root`` or ``CDKD_BENCH_DATA``), as published (the cleaned version)::

    <data_root>/domainnet/<domain>_train.txt     "clipart/aircraft_carrier/clipart_001_000001.jpg 0" per line
    <data_root>/domainnet/<domain>_test.txt
    <data_root>/domainnet/<domain>/<class>/<file>.jpg

for ``<domain>`` in clipart, infograph, painting, quickdraw, real and sketch. Paths in the lists
are relative to ``<data_root>/domainnet``. The lists give the split and the labels: targets are
scored on their test list (no transductive protocol, no checksum split). Within and across a
domain's two lists, every line with one label must lie in one class folder and each class folder
must have one label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdkd_bench import DataContext, Domain, DomainFiles, RegisterDomains, RegisterSuites, Suite, UserError, hookimpl

from .image_layouts import (
    SUITE_SETTINGS,
    ListedImage,
    data_root,
    image_files,
    read_image_list,
    require_file,
    require_folder,
)

DOMAINNET_HOMEPAGE = "https://ai.bu.edu/M3SDA/"

# The class folder names by label, in the order of TLlib's `DomainNet.CLASSES`. The lists, not this
# tuple, label the images when a domain is listed (see the module docstring).
DOMAINNET_CLASSES = (
    "aircraft_carrier", "airplane", "alarm_clock", "ambulance", "angel", "animal_migration", "ant", "anvil", "apple",
    "arm", "asparagus", "axe", "backpack", "banana", "bandage", "barn", "baseball", "baseball_bat", "basket",
    "basketball", "bat", "bathtub", "beach", "bear", "beard", "bed", "bee", "belt", "bench", "bicycle", "binoculars",
    "bird", "birthday_cake", "blackberry", "blueberry", "book", "boomerang", "bottlecap", "bowtie", "bracelet",
    "brain", "bread", "bridge", "broccoli", "broom", "bucket", "bulldozer", "bus", "bush", "butterfly", "cactus",
    "cake", "calculator", "calendar", "camel", "camera", "camouflage", "campfire", "candle", "cannon", "canoe",
    "car", "carrot", "castle", "cat", "ceiling_fan", "cello", "cell_phone", "chair", "chandelier", "church",
    "circle", "clarinet", "clock", "cloud", "coffee_cup", "compass", "computer", "cookie", "cooler", "couch", "cow",
    "crab", "crayon", "crocodile", "crown", "cruise_ship", "cup", "diamond", "dishwasher", "diving_board", "dog",
    "dolphin", "donut", "door", "dragon", "dresser", "drill", "drums", "duck", "dumbbell", "ear", "elbow",
    "elephant", "envelope", "eraser", "eye", "eyeglasses", "face", "fan", "feather", "fence", "finger",
    "fire_hydrant", "fireplace", "firetruck", "fish", "flamingo", "flashlight", "flip_flops", "floor_lamp", "flower",
    "flying_saucer", "foot", "fork", "frog", "frying_pan", "garden", "garden_hose", "giraffe", "goatee", "golf_club",
    "grapes", "grass", "guitar", "hamburger", "hammer", "hand", "harp", "hat", "headphones", "hedgehog",
    "helicopter", "helmet", "hexagon", "hockey_puck", "hockey_stick", "horse", "hospital", "hot_air_balloon",
    "hot_dog", "hot_tub", "hourglass", "house", "house_plant", "hurricane", "ice_cream", "jacket", "jail",
    "kangaroo", "key", "keyboard", "knee", "knife", "ladder", "lantern", "laptop", "leaf", "leg", "light_bulb",
    "lighter", "lighthouse", "lightning", "line", "lion", "lipstick", "lobster", "lollipop", "mailbox", "map",
    "marker", "matches", "megaphone", "mermaid", "microphone", "microwave", "monkey", "moon", "mosquito",
    "motorbike", "mountain", "mouse", "moustache", "mouth", "mug", "mushroom", "nail", "necklace", "nose", "ocean",
    "octagon", "octopus", "onion", "oven", "owl", "paintbrush", "paint_can", "palm_tree", "panda", "pants",
    "paper_clip", "parachute", "parrot", "passport", "peanut", "pear", "peas", "pencil", "penguin", "piano",
    "pickup_truck", "picture_frame", "pig", "pillow", "pineapple", "pizza", "pliers", "police_car", "pond", "pool",
    "popsicle", "postcard", "potato", "power_outlet", "purse", "rabbit", "raccoon", "radio", "rain", "rainbow",
    "rake", "remote_control", "rhinoceros", "rifle", "river", "roller_coaster", "rollerskates", "sailboat",
    "sandwich", "saw", "saxophone", "school_bus", "scissors", "scorpion", "screwdriver", "sea_turtle", "see_saw",
    "shark", "sheep", "shoe", "shorts", "shovel", "sink", "skateboard", "skull", "skyscraper", "sleeping_bag",
    "smiley_face", "snail", "snake", "snorkel", "snowflake", "snowman", "soccer_ball", "sock", "speedboat", "spider",
    "spoon", "spreadsheet", "square", "squiggle", "squirrel", "stairs", "star", "steak", "stereo", "stethoscope",
    "stitches", "stop_sign", "stove", "strawberry", "streetlight", "string_bean", "submarine", "suitcase", "sun",
    "swan", "sweater", "swing_set", "sword", "syringe", "table", "teapot", "teddy-bear", "telephone", "television",
    "tennis_racquet", "tent", "The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa", "tiger", "toaster",
    "toe", "toilet", "tooth", "toothbrush", "toothpaste", "tornado", "tractor", "traffic_light", "train", "tree",
    "triangle", "trombone", "truck", "trumpet", "t-shirt", "umbrella", "underwear", "van", "vase", "violin",
    "washing_machine", "watermelon", "waterslide", "whale", "wheel", "windmill", "wine_bottle", "wine_glass",
    "wristwatch", "yoga", "zebra", "zigzag",
)

# name, images in the cleaned version (train + test lists), description
DOMAINNET_DOMAINS = (
    ("clipart", 48_129, "clipart images"),
    ("infograph", 51_605, "infographics"),
    ("painting", 72_266, "paintings"),
    ("quickdraw", 172_500, "drawings from the Quick, Draw! game"),
    ("real", 172_947, "photographs"),
    ("sketch", 69_128, "sketches"),
)
SPLITS = ("train", "test")


@dataclass
class _ClassFolders:
    """Which class folder each label was first seen in, and where, to check the lists agree with themselves."""

    by_label: dict[int, tuple[str, Path, int]]
    by_folder: dict[str, tuple[int, Path, int]]

    def check(self, list_file: Path, image: ListedImage, domain: str) -> None:
        parts = image.relative.split("/")
        where = f"{str(list_file)!r} line {image.line}"
        if len(parts) != 3 or parts[0] != domain:
            raise UserError(f"{where} names {image.relative!r}, which is not '{domain}/<class>/<file>'")
        folder = parts[1]
        seen = self.by_label.setdefault(image.label, (folder, list_file, image.line))
        if seen[0] != folder:
            raise UserError(f"{where} gives label {image.label} to class folder {folder!r}, "
                            f"but line {seen[2]} of {str(seen[1])!r} gives it to {seen[0]!r}")
        known = self.by_folder.setdefault(folder, (image.label, list_file, image.line))
        if known[0] != image.label:
            raise UserError(f"{where} labels class folder {folder!r} {image.label}, "
                            f"but line {known[2]} of {str(known[1])!r} labels it {known[0]}")


def _list_locator(name: str) -> Callable[[DataContext], DomainFiles]:
    domain = f"domainnet.{name}"

    def locate(context: DataContext) -> DomainFiles:
        root = data_root(context, domain, f"DomainNet (<data root>/domainnet/{name}_train.txt, {name}_test.txt and {name}/<class>/*.jpg)")
        base = root / "domainnet"
        layout = f"{base}/{name}_train.txt and {base}/{name}_test.txt naming images {base}/{name}/<class>/<file>.jpg"
        require_folder(base / name, domain, layout, "DomainNet", DOMAINNET_HOMEPAGE, [(root / name, base / name)])
        folders = _ClassFolders({}, {})
        lists, splits = [], []
        for split in SPLITS:
            list_file = base / f"{name}_{split}.txt"
            require_file(list_file, domain, layout, "DomainNet", DOMAINNET_HOMEPAGE)
            listed = read_image_list(list_file, base, len(DOMAINNET_CLASSES))
            for image in listed:
                folders.check(list_file, image, name)
            lists.append(list_file)
            splits.append(image_files(sorted((image.path, image.label) for image in listed)))
        train, test = splits
        return DomainFiles(sources=(*lists, *train.paths, *test.paths), train=train, test=test)

    return locate


@hookimpl
def cdkd_register_domains(register: RegisterDomains) -> None:
    for name, count, description in DOMAINNET_DOMAINS:
        register(Domain(
            name=f"domainnet.{name}",
            num_classes=len(DOMAINNET_CLASSES),
            load=None,
            locate=_list_locator(name),
            expected_images=count,
            homepage=DOMAINNET_HOMEPAGE,
            description=f"DomainNet {name}: {description}; 345 classes, {count:,} images (cleaned version)",
        ))


@hookimpl
def cdkd_register_suites(register: RegisterSuites) -> None:
    register(Suite(
        name="domainnet",
        domains=tuple(f"domainnet.{name}" for name, _, _ in DOMAINNET_DOMAINS),
        num_classes=len(DOMAINNET_CLASSES),
        description="DomainNet: 345 classes as clipart, infographics, paintings, quickdraw sketches, photos and sketches; "
                    "official train/test lists; files under <data root>/domainnet",
        **SUITE_SETTINGS,
    ))
