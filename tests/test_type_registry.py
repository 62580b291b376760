"""Model types are found by name among the defined RealtimeModel subclasses (DESIGN §4b):
None for no class, the class for one, a SchemaError naming both for two; classes that are
garbage-collected vanish, collections register once per element type."""

import gc

import pytest

import rtecs
from rtecs.errors import SchemaError
from rtecs.model import find_model_type


class RegistryPlayer(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")


class Renamed(rtecs.RealtimeModel, type_name="registry.Wire"):
    v: int = rtecs.prop(1)


def test_a_defined_class_is_found_by_its_type_name() -> None:
    assert find_model_type("RegistryPlayer") is RegistryPlayer
    assert find_model_type("registry.Wire") is Renamed
    assert find_model_type("Renamed") is None


def test_an_unknown_name_is_none() -> None:
    assert find_model_type("NoSuchModelAnywhere") is None


def test_a_name_defined_twice_is_an_error_naming_both() -> None:
    def define() -> type[rtecs.RealtimeModel]:
        class Twin(rtecs.RealtimeModel, type_name="registry.Twin"):
            x: int = rtecs.prop(1)
        return Twin

    first, second = define(), define()
    with pytest.raises(SchemaError) as info:
        find_model_type("registry.Twin")
    message = str(info.value)
    where = f"{__name__}.test_a_name_defined_twice_is_an_error_naming_both.<locals>." \
            "define.<locals>.Twin"
    assert message.count(where) == 2 and "types=" in message
    del second
    gc.collect()
    assert find_model_type("registry.Twin") is first


def test_a_collected_class_vanishes() -> None:
    class Ghost(rtecs.RealtimeModel, type_name="registry.Ghost"):
        x: int = rtecs.prop(1)

    assert find_model_type("registry.Ghost") is Ghost
    del Ghost
    gc.collect()
    assert find_model_type("registry.Ghost") is None


def test_an_ambiguity_left_by_a_dead_class_is_no_error() -> None:
    def define() -> None:
        class Once(rtecs.RealtimeModel, type_name="registry.Once"):
            x: int = rtecs.prop(1)

    define()  # dead at once, though maybe not yet collected (classes sit in cycles)
    define()
    class Once(rtecs.RealtimeModel, type_name="registry.Once"):
        x: int = rtecs.prop(1)

    assert find_model_type("registry.Once") is Once


def test_collection_classes_register_once_per_element_type() -> None:
    class Gem(rtecs.RealtimeModel, type_name="registry.Gem"):
        shine: int = rtecs.prop(1)

    class Chest(rtecs.RealtimeModel, type_name="registry.Chest"):
        gems: rtecs.RealtimeSet[Gem] = rtecs.prop(1)
        row: rtecs.RealtimeArray[Gem] = rtecs.prop(2)

    made = rtecs.RealtimeSet[Gem]
    assert rtecs.RealtimeSet[Gem] is made and Chest.gems.child_type is made
    assert find_model_type("rtecs.Set<registry.Gem>") is made
    assert find_model_type("rtecs.Array<registry.Gem>") is rtecs.RealtimeArray[Gem]
    # the generic bases are not model types of their own
    for base in ("rtecs.Set", "rtecs.Array", "rtecs.Dict", "rtecs.StrDict", "rtecs.Keyed",
                 "rtecs.Collection"):
        assert find_model_type(base) is None
    del made, Chest, Gem
    gc.collect()  # nothing keeps a collection class alive but the models that declare it
    assert find_model_type("registry.Gem") is None
    assert find_model_type("rtecs.Set<registry.Gem>") is None


def test_an_abstract_base_is_not_found() -> None:
    class Base(rtecs.RealtimeModel, type_name="registry.Base", abstract=True):
        hp: int = rtecs.prop(1)

    class Orc(Base, type_name="registry.Orc"):
        pass

    assert find_model_type("registry.Base") is None
    assert find_model_type("registry.Orc") is Orc and Orc.hp.name == "hp"
