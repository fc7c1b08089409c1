"""Where A1111, Forge and ControlNet differ, against stand-ins shaped like each (A1111 v1.10.1; Forge dfdcbab6;
sd-webui-controlnet 56cec5b2): the same extension code must find the tokenizer, the embedding names and the
cases where Hyperbatch may not fork. The live suites run the real WebUIs (without ControlNet)."""

import importlib
import sys
from types import ModuleType, SimpleNamespace

import pytest


class Engine:  # Forge's ClassicTextProcessingEngine: process_texts and its own embedding database
    def __init__(self, *names):
        self.embeddings = SimpleNamespace(word_embeddings={name: object() for name in names})

    def process_texts(self, texts):
        return [[]], 0


class FolderDatabase:  # modules.textual_inversion.textual_inversion.EmbeddingDatabase
    def __init__(self):
        self.word_embeddings, self.dirs = {}, []

    def add_embedding_dir(self, path):
        self.dirs.append(path)

    def load_textual_inversion_embeddings(self, force_reload=False, sync_with_sd_model=True):
        assert force_reload and not sync_with_sd_model
        self.word_embeddings = {f"from-{path}": object() for path in self.dirs}


def _stand_in_webui(monkeypatch, sd_model, embedding_db=None):
    """Install a stand-in `modules` package and return freshly imported text_model and samplers."""
    shared = SimpleNamespace(sd_model=sd_model, cmd_opts=SimpleNamespace(embeddings_dir="embeddings"),
                             opts=SimpleNamespace())
    hijack = SimpleNamespace() if embedding_db is None else SimpleNamespace(embedding_db=embedding_db)
    stand_ins = {
        "modules": {"shared": shared},
        "modules.shared": vars(shared),
        "modules.sd_hijack": {"model_hijack": hijack},
        "modules.sd_samplers": {},
        "modules.sd_samplers_common": {},
        "modules.sd_samplers_kdiffusion": {},
        "modules.textual_inversion": {},
        "modules.textual_inversion.textual_inversion": {"EmbeddingDatabase": FolderDatabase},
    }
    for name, attributes in stand_ins.items():
        module = ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules["modules"].__dict__.update({n.split(".")[1]: sys.modules[n] for n in stand_ins if "." in n})
    loaded = []
    for name in ("lib_pinning.webui.text_model", "lib_pinning.webui.samplers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        loaded.append(importlib.import_module(name))
    return loaded


def test_a1111_uses_the_cond_stage_model_and_the_hijacks_embeddings(monkeypatch):
    cond_stage_model = Engine()
    model = SimpleNamespace(cond_stage_model=cond_stage_model)
    database = SimpleNamespace(word_embeddings={"easynegative": object()})
    text_model, _ = _stand_in_webui(monkeypatch, model, database)
    assert text_model.prompt_tokenizer() is cond_stage_model
    assert text_model.embedding_names() == {"easynegative"}


@pytest.mark.parametrize("engines", [("text_processing_engine",), ("text_processing_engine_l",
                                                                      "text_processing_engine_g")])
def test_forge_uses_the_models_text_engines_and_their_embeddings(monkeypatch, engines):
    model = SimpleNamespace(cond_stage_model=None, **{name: Engine(f"ti-{name[-1]}") for name in engines})
    text_model, _ = _stand_in_webui(monkeypatch, model)
    assert text_model.prompt_tokenizer() is getattr(model, engines[0])
    # the folder's names too: Forge loads a newly chosen checkpoint only when the job renders
    assert text_model.embedding_names() == {f"ti-{name[-1]}" for name in engines} | {"from-embeddings"}


def test_forge_before_its_first_generation_reads_the_embeddings_folder(monkeypatch):
    fake_initial_model = SimpleNamespace(cond_stage_model=None, chunk_length=75)
    text_model, _ = _stand_in_webui(monkeypatch, fake_initial_model)
    assert text_model.prompt_tokenizer() is None  # the tokens route answers 409
    assert text_model.embedding_names() == {"from-embeddings"}


def _forge_model(prediction_type="epsilon", controlnet=None):
    predictor = SimpleNamespace(prediction_type=prediction_type)
    unet = SimpleNamespace(model=SimpleNamespace(predictor=predictor), controlnet_linked_list=controlnet)
    return SimpleNamespace(forge_objects=SimpleNamespace(unet=unet))


@pytest.mark.parametrize("model, forks", [
    (SimpleNamespace(), True),  # A1111 SD1/SDXL
    (SimpleNamespace(is_sd3=True), False),  # A1111 SD3
    (_forge_model("epsilon"), True),
    (_forge_model("v_prediction"), True),
    (_forge_model("const"), False),  # Forge's Flux, Chroma, SD3.5: x = sigma*noise + (1-sigma)*x0
    (_forge_model("epsilon", controlnet=object()), False),
])
def test_hyperbatch_forks_only_where_its_noise_model_holds(monkeypatch, caplog, model, forks):
    _, samplers = _stand_in_webui(monkeypatch, model)
    job = SimpleNamespace(is_hr_pass=False, init_images=None, refiner_checkpoint_info=None)
    with caplog.at_level("INFO", logger="lib_pinning"):
        assert samplers.can_fork(SimpleNamespace(p=job)) is forks
    assert ("sampling the whole batch" in caplog.text) is not forks


class ControlNetScript:  # sd-webui-controlnet's always-on script after its process()
    def __init__(self, units=0, style_align=False):
        self.latest_network = None if units == 0 else SimpleNamespace(control_params=[object()] * units)
        self.ui_batch_option_state = ["All ControlNet units for all images in a batch", style_align]

    def title(self):
        return "ControlNet"


class OtherScript:
    latest_network = SimpleNamespace(control_params=[object()])

    def title(self):
        return "Refiner"


@pytest.mark.parametrize("scripts, forks", [
    ([], True),
    ([OtherScript(), ControlNetScript(units=0)], True),  # installed, no unit enabled
    ([OtherScript(), ControlNetScript(units=1)], False),
    ([ControlNetScript(units=0, style_align=True)], False),
])
def test_hyperbatch_does_not_fork_under_the_controlnet_extension(monkeypatch, caplog, scripts, forks):
    _, samplers = _stand_in_webui(monkeypatch, SimpleNamespace())
    job = SimpleNamespace(is_hr_pass=False, init_images=None, refiner_checkpoint_info=None,
                          scripts=SimpleNamespace(alwayson_scripts=scripts))
    with caplog.at_level("INFO", logger="lib_pinning"):
        assert samplers.can_fork(SimpleNamespace(p=job)) is forks
    assert ("ControlNet is on" in caplog.text) is not forks
