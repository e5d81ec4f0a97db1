"""The hostile-input table (issue 12): every case states its input and what must happen (see ``tests/hostile.py``).

Routes: ``cli`` and ``worker`` run in one process (``tests/hostile_runner.py``, through the same entry
points as ``python -m optsar_plugin``), ``qgis_process`` as real ``qgis_process`` runs, ``processing``
through ``processing.run`` in the test's QGIS process.  Real kills (SIGTERM, SIGKILL) and two runs
writing at once are in ``tests/test_hostile_signals.py``.
"""

from __future__ import annotations

from tests.hostile import Case

SAME = r"same file as the {}"
READ_ONLY = r"readonly.*(not writable|Cannot write)"
SIDE = r"read together with the {}"


# -- argument builders -----------------------------------------------------------------------------


def classify(*extra, optical="{S}/optical.tif", sar="{S}/sar.tif", ck="{CK}", out="{O}/map.tif"):
    args = ["classify", "--optical", optical, "--sar", sar, "--checkpoint", ck, "--device", "cpu"]
    args += [] if "--tile-size" in extra else ["--tile-size", "64"]
    return args + (["--output", out] if out else []) + list(extra)


def assess(*extra, classification="{S}/truth.tif", reference="{S}/reference.gpkg", field="class_code"):
    return ["assess", classification, reference, "--class-field", field, *extra]


def sample(*extra, classification="{S}/truth.tif", out="{O}/points.gpkg"):
    return ["sample", classification, out, "--total", "30", *extra]


def train(*extra, optical="{S}/optical.tif", sar="{S}/sar.tif", reference="{S}/reference_train.gpkg",
          out="{O}/model.safetensors"):
    args = ["train", "--optical", optical, "--sar", sar, "--class-field", "class_name", "--model",
            "cloudlulc_net", "--epochs", "1", "--device", "cpu"]
    args += [] if "--labels" in extra else ["--reference", reference]
    args += [] if "--tile-size" in extra else ["--tile-size", "64"]
    return args + ["--output", out, *extra]


def batch(*extra, scenes="{D}/scenes.csv", ck="{CK}", out="{O}"):
    return ["batch", "--scenes", scenes, "--checkpoint", ck, "--output-dir", out, "--device", "cpu", "--workers", "1",
            *extra]


def cli(name, args, status, message="", note="", **kw) -> Case:
    return Case(name, "cli", args, status, message, note, **kw)


def ck_case(name, file, message, note, **kw) -> Case:
    return cli(f"classify_checkpoint_{name}", classify(ck="{C}/" + file), 2, message, note, **kw)


CK_NAMED = r"Checkpoint '[^']*{}[^']*'"

# -- classify: outputs that are inputs under another name -------------------------------------------

CLASSIFY_IDENTITY = [
    cli("classify_output_is_optical_double_slash", classify(out="/{S}/optical.tif"), 2, SAME.format("optical raster"),
        "OUTPUT = //.../optical.tif"),
    cli("classify_output_is_optical_dotdot", classify(out="{S}/../scene/optical.tif"), 2,
        SAME.format("optical raster"), "OUTPUT = scene/../scene/optical.tif"),
    cli("classify_output_is_sar_through_symlinked_folder", classify(out="{D}/link/sar.tif"), 2,
        SAME.format("SAR raster"), "OUTPUT in a symlink to the scene folder"),
    cli("classify_output_is_sar_hard_link", classify(out="{D}/hard_sar.tif"), 2, SAME.format("SAR raster"),
        "OUTPUT = a hard link of the SAR raster"),
    cli("classify_optical_symlink_output_real_file", classify(optical="{D}/optical_link.tif", out="{S}/optical.tif"), 2,
        SAME.format("optical raster"), "OPTICAL through a symlink, OUTPUT = the real file"),
    cli("classify_output_is_checkpoint", classify(out="{CK}"), 2, SAME.format("checkpoint"), "OUTPUT = CHECKPOINT"),
    cli("classify_output_is_checkpoint_dotdot", classify(out="{S}/../tiny.safetensors"), 2, SAME.format("checkpoint"),
        "OUTPUT = CHECKPOINT through .."),
    cli("classify_output_is_cloud_mask", classify("--cloud-mask", "{S}/cloud_mask.tif", out="//{S}/cloud_mask.tif"), 2,
        SAME.format("cloud mask"), "OUTPUT = CLOUD_MASK through //"),
    cli("classify_confidence_is_optical", classify("--confidence", "{S}/optical.tif"), 2,
        r"confidence output .*" + SAME.format("optical raster"), "OUTPUT_CONFIDENCE = OPTICAL"),
    cli("classify_probabilities_is_sar", classify("--probabilities", "{D}/link/../scene/sar.tif"), 2,
        r"probability output .*" + SAME.format("SAR raster"), "OUTPUT_PROBABILITIES = SAR through link/.."),
    cli("classify_output_is_optical_side_car", classify(out="{S}/optical.tif.aux.xml"), 2, SIDE.format("optical raster"),
        "OUTPUT = optical.tif.aux.xml (GDAL's side-car of the input)"),
    cli("classify_style_would_restyle_optical", classify(out="{S}/optical.tiff"), 2, SIDE.format("optical raster"),
        "OUTPUT optical.tiff: its style optical.qml would restyle the optical layer"),
    cli("classify_output_ends_in_qml", classify(out="{O}/map.qml"), 2, r"map\.qml.*are the same file",
        "OUTPUT = map.qml: the raster and its own style"),
    cli("classify_confidence_is_the_outputs_style", classify("--confidence", "{O}/map.qml"), 2,
        r"map\.qml.*are the same file", "OUTPUT_CONFIDENCE = the classification's .qml"),
    cli("classify_confidence_is_output", classify("--confidence", "{O}/map.tif"), 2, r"are the same file",
        "OUTPUT_CONFIDENCE = OUTPUT"),
    cli("classify_output_is_a_folder", classify(out="{O}"), 2, r"is a folder", "OUTPUT = a folder"),
    cli("classify_output_folder_missing", classify(out="{O}/missing/map.tif"), 2, r"folder of the output .* not exist",
        "OUTPUT in a folder that does not exist"),
    cli("classify_output_in_read_only_folder", classify(out="{RO}/map.tif"), 2,
        READ_ONLY, "OUTPUT in a read-only folder", needs="readonly"),
    cli("classify_output_is_unicode_optical", classify(optical="{U}/ñ_optical.tif", out="/{U}/./ñ_optical.tif"), 2,
        SAME.format("optical raster") + r".*ñ_optical", "non-ASCII paths, OUTPUT = OPTICAL through // and ."),
]

# -- classify: rasters that cannot be used ------------------------------------------------------------

CLASSIFY_RASTERS = [
    cli("classify_optical_missing", classify(optical="{C}/nothing_here.tif"), 2, r"optical raster .*nothing_here.* not exist",
        "OPTICAL does not exist"),
    cli("classify_optical_empty_file", classify(optical="{C}/empty.tif"), 2, r"optical raster .*empty\.tif.*cannot be opened",
        "OPTICAL is an empty file"),
    cli("classify_optical_text_file", classify(optical="{C}/text.tif"), 2, r"optical raster .*text\.tif.*cannot be opened",
        "OPTICAL is a text file named .tif"),
    cli("classify_optical_bad_header", classify(optical="{C}/badheader.tif"), 2, r"optical raster .*badheader.*cannot be opened",
        "OPTICAL has a TIFF signature and a broken directory"),
    cli("classify_optical_no_band", classify(optical="{C}/nobands.vrt"), 2, r"optical raster .*nobands\.vrt",
        "OPTICAL is a VRT without bands"),
    cli("classify_optical_truncated_mid_read", classify(optical="{C}/truncated.tif"), 2,
        r"raster .*truncated\.tif.* cannot be read", "OPTICAL's header is fine, its strips are cut off"),
    cli("classify_optical_complex", classify(optical="{C}/complex_optical.tif"), 2,
        r"optical raster .*complex_optical.*complex", "OPTICAL is complex64 (was silently reduced to its real part)"),
    cli("classify_optical_dev_zero", classify(optical="{C}/dev_zero.tif"), 2, r"optical raster .*dev_zero.*not a regular file",
        "OPTICAL is a symlink to /dev/zero"),
    cli("classify_optical_fifo", classify(optical="{C}/fifo.tif"), 2, r"optical raster .*fifo\.tif.*not a regular file",
        "OPTICAL is a named pipe (GDAL would wait forever)", max_seconds=20),
    cli("classify_sar_complex", classify(sar="{C}/complex_sar.tif"), 2, r"SAR raster .*complex_sar.*complex.*SLC",
        "SAR is a complex (SLC-like) raster"),
    cli("classify_sar_text_file", classify(sar="{C}/text.tif"), 2, r"SAR raster .*text\.tif", "SAR is a text file"),
    cli("classify_sar_one_band", classify(sar="{C}/sar_one_band.tif"), 2, r"2 SAR band.*1 band.*sar_one_band",
        "SAR has one band, the checkpoint wants two"),
    cli("classify_cloud_mask_text", classify("--cloud-mask", "{C}/text.tif"), 2, r"cloud mask .*text\.tif",
        "CLOUD_MASK is a text file"),
    cli("classify_cloud_mask_truncated", classify("--cloud-mask", "{C}/map_truncated.tif"), 2,
        r"raster .*map_truncated.* cannot be read", "CLOUD_MASK truncated mid-read"),
    cli("classify_cloud_mask_complex", classify("--cloud-mask", "{C}/complex_map.tif"), 2,
        r"cloud mask .*complex_map.*complex", "CLOUD_MASK is complex"),
]

# -- classify: crafted checkpoints ---------------------------------------------------------------------

CLASSIFY_CHECKPOINTS = [
    ck_case("missing", "nothing.safetensors", CK_NAMED.format("nothing") + r".*does not exist", "CHECKPOINT missing"),
    ck_case("empty", "empty.safetensors", CK_NAMED.format("empty") + r".*empty or truncated", "an empty file"),
    ck_case("text", "text.safetensors", CK_NAMED.format("text") + r".*not a safetensors", "a text file"),
    ck_case("pickle", "pickle.pt", CK_NAMED.format(r"pickle\.pt") + r".*pickle", "a Python pickle: never unpickled"),
    ck_case("torch_save", "torch_save.pt", CK_NAMED.format(r"torch_save\.pt") + r".*torch\.save", "a torch.save zip"),
    ck_case("truncated", "truncated.safetensors", CK_NAMED.format("truncated") + r".*truncated", "cut at 2/3"),
    ck_case("deep_json_header", "deep_header.safetensors", CK_NAMED.format("deep_header") + r".*nested",
            "100 000-deep JSON in the safetensors header", max_seconds=2),
    ck_case("deep_json_metadata", "deep_meta.safetensors", CK_NAMED.format("deep_meta") + r".*nested",
            "100 000-deep JSON in the OptSAR metadata", max_seconds=2),
    ck_case("no_classes", "no_classes.safetensors", CK_NAMED.format("no_classes") + r".*field 'classes' is missing",
            "metadata without classes"),
    ck_case("class_not_dict", "class_not_dict.safetensors", CK_NAMED.format("class_not_dict") + r".*classes\[0\]",
            "a class that is a string, not an object"),
    ck_case("bad_colour", "bad_colour.safetensors", CK_NAMED.format("bad_colour") + r".*classes\[1\]\.color",
            "colour 'red' (was found only after the whole inference)"),
    ck_case("html_in_colour", "html_colour.safetensors", CK_NAMED.format("html_colour") + r".*classes\[1\]\.color",
            "HTML in a colour"),
    ck_case("normalisation_string", "norm_string.safetensors", CK_NAMED.format("norm_string") + r".*'normalisation'",
            "normalisation is a string"),
    ck_case("bands_integer", "bands_int.safetensors", CK_NAMED.format("bands_int") + r".*'bands'", "bands is 10"),
    ck_case("scale_zero", "scale_zero.safetensors", CK_NAMED.format("scale_zero") + r".*scale\[0\].*positive",
            "a normalisation scale of 0"),
    ck_case("unknown_normalisation", "method_unknown.safetensors",
            CK_NAMED.format("method_unknown") + r".*normalisation\.optical\.method", "normalisation method 'minmax'"),
    ck_case("channels_bomb", "channels_bomb.safetensors",
            CK_NAMED.format("channels_bomb") + r".*'channels' must be a whole number from 2 to 1024, got 12000",
            "channels=12000 asked for 2.6 GB in one allocation: the model's declared bounds", max_seconds=10),
    ck_case("depth_bomb", "depth_bomb.safetensors",
            CK_NAMED.format("depth_bomb") + r".*'depth' must be a whole number from 0 to 48, got 300000",
            "depth=300000 ran 28 s and reached 3.1 GB: the model's declared bounds", max_seconds=10),
    ck_case("channels_within_bounds", "channels_1024.safetensors",
            CK_NAMED.format("channels_1024") + r".*channels=1024.*describes a larger cloudlulc_net network than the",
            "channels=1024 (allowed) for weights of 8 channels: stopped on the meta device", max_seconds=10),
    ck_case("depth_within_bounds", "depth_48.safetensors",
            CK_NAMED.format("depth_48") + r".*describes a larger cloudlulc_net network", "depth=48 for a 1-block file",
            max_seconds=10),
    ck_case("names_a_file", "pretrained_path.safetensors", CK_NAMED.format("pretrained_path") + r".*names a file",
            "a configuration naming a file to read when building"),
    ck_case("unknown_option", "bogus_option.safetensors", CK_NAMED.format("bogus_option") + r".*bogus",
            "an option the network does not have"),
    ck_case("unknown_model", "unknown_model.safetensors", CK_NAMED.format("unknown_model") + r".*resnet_lstm",
            "a network this version does not know"),
    ck_case("newer_format", "newer_format.safetensors", CK_NAMED.format("newer_format") + r".*format 2", "format 2"),
    ck_case("weights_modified", "weights_modified.safetensors",
            CK_NAMED.format("weights_modified") + r".*(modified|hash)", "one weight byte flipped"),
    ck_case("class_code_255", "code_255.safetensors", CK_NAMED.format("code_255") + r".*classes\[1\]\.code",
            "a class with code 255 (nodata)"),
    ck_case("field_outside_schema", "extra_field.safetensors", CK_NAMED.format("extra_field") + r".*surprise",
            "a metadata field outside the schema"),
    ck_case("not_optsar", "not_optsar.safetensors", r"not_optsar.*not an OptSAR Fusion checkpoint",
            "a safetensors file without OptSAR metadata"),
]

# -- classify: options ---------------------------------------------------------------------------------

CLASSIFY_OPTIONS = [
    cli("classify_tile_size_0", classify("--tile-size", "0"), 2, r"Tile size 0", "--tile-size 0 (was the default)"),
    cli("classify_tile_size_33", classify("--tile-size", "33"), 2, r"Tile size 33 .*multiple of 32", "--tile-size 33"),
    cli("classify_tile_size_text", classify("--tile-size", "big"), 2, r"--tile-size.*invalid int", "--tile-size big"),
    cli("classify_overlap_too_large", classify("--overlap", "40"), 2, r"[Oo]verlap 40", "--overlap 40 with tile 64"),
    cli("classify_batch_size_0", classify("--batch-size", "0"), 2, r"Batch size", "--batch-size 0"),
    cli("classify_band_0", classify("--optical-bands", "1,2,3,4,5,6,7,8,9,0"), 2, r"band 0 does not exist",
        "OPTICAL_BANDS with a 0"),
    cli("classify_band_beyond", classify("--optical-bands", "1,2,3,4,5,6,7,8,9,11"), 2, r"band 11 does not exist",
        "OPTICAL_BANDS naming band 11 of 10"),
    cli("classify_band_twice", classify("--sar-bands", "1,1"), 2, r"names a band twice", "SAR_BANDS 1,1"),
    cli("classify_wrong_band_count", classify("--optical-bands", "1,2,3"), 2, r"10 optical band.*3 band",
        "three optical bands for a ten-band checkpoint"),
    cli("classify_extent_crs_unknown", classify("--extent", "601000,5296500,601500,5297000", "--extent-crs",
                                                 "EPSG:999999"), 2, r"extent CRS 'EPSG:999999'", "--extent-crs EPSG:999999"),
    cli("classify_extent_outside", classify("--extent", "0,0,10,10"), 2, r"does not overlap the optical raster",
        "an extent far from the raster"),
    cli("classify_extent_empty", classify("--extent", "601500,5296500,601000,5297000"), 2, r"extent .* is empty",
        "xmax < xmin"),
    cli("classify_wrong_model", classify("--model", "mosfnet"), 2, r"holds a cloudlulc_net network.*mosfnet",
        "--model mosfnet for a CloudLULC-Net checkpoint"),
    cli("classify_unknown_device", classify("--device", "tpu"), 2, r"--device.*invalid choice", "--device tpu"),
]

LONG_NAME = "土地被覆" * 20 + ".tif"  # 244 bytes: a valid name whose temporary sibling must be shorter

CLASSIFY_VALID_ODD = [
    cli("classify_long_non_ascii_name", classify(out="{O}/" + LONG_NAME), 0, note="an output name of 244 bytes",
        present=("{O}/" + LONG_NAME,)),
    cli("classify_style_replaces_a_users_file", classify(), 0, note="a map.qml of the user's beside a new map.tif",
        prepare=(("{O}/map.qml", "<qgis>the user's own style</qgis>"),), present=("{O}/map.tif",),
        expect=r"WARNING: The style file of the output classification '.*map\.qml' replaced a file of the same name"),
    cli("classify_unicode_paths", classify(optical="{U}/ñ_optical.tif", sar="{U}/ñ_sar.tif", ck="{U}/modèle.safetensors",
                                           out="{O}/carte_é.tif"), 0,
        note="every path non-ASCII: works", present=("{O}/carte_é.tif", "{O}/carte_é.qml")),
]

# -- assess ------------------------------------------------------------------------------------------

ASSESS = [
    cli("assess_report_is_classification", assess("--report", "/{S}/truth.tif"), 2, SAME.format("classification"),
        "OUTPUT_REPORT = CLASSIFICATION through //"),
    cli("assess_metrics_is_reference", assess("--metrics", "{S}/../scene/reference.gpkg"), 2,
        SAME.format("reference layer"), "OUTPUT_METRICS = REFERENCE through .."),
    cli("assess_matrix_is_reference_through_link", assess("--matrix", "{D}/link/reference.gpkg"), 2,
        SAME.format("reference layer"), "OUTPUT_MATRIX = REFERENCE through a symlinked folder"),
    cli("assess_report_is_checkpoint", assess("--checkpoint", "{CK}", "--report", "{CK}"), 2, SAME.format("checkpoint"),
        "OUTPUT_REPORT = CHECKPOINT"),
    cli("assess_report_is_maps_style", assess("--report", "{S}/truth.qml"), 2, SIDE.format("classification"),
        "OUTPUT_REPORT = the classification's .qml (its class names)"),
    cli("assess_metrics_is_geopackage_wal", assess("--metrics", "{S}/reference.gpkg-wal"), 2,
        SIDE.format("reference layer"), "OUTPUT_METRICS = reference.gpkg-wal (SQLite would replay it)"),
    cli("assess_metrics_is_shapefile_dbf", assess("--metrics", "{C}/shp/ref.dbf", reference="{C}/shp/ref.shp",
                                                  field="cls"), 2, SIDE.format("reference layer"),
        "OUTPUT_METRICS = the .dbf of the reference shapefile"),
    cli("assess_two_outputs_same_file", assess("--report", "{O}/r.html", "--metrics", "{O}/r.html"), 2,
        r"are the same file", "OUTPUT_REPORT = OUTPUT_METRICS"),
    cli("assess_report_in_read_only_folder", assess("--report", "{RO}/r.html"), 2, READ_ONLY,
        "OUTPUT_REPORT in a read-only folder", needs="readonly"),
    cli("assess_classification_empty", assess("--metrics", "{O}/m.json", classification="{C}/empty.tif"), 2,
        r"classification raster .*empty\.tif", "CLASSIFICATION is empty"),
    cli("assess_classification_text", assess("--metrics", "{O}/m.json", classification="{C}/text.tif"), 2,
        r"classification raster .*text\.tif", "CLASSIFICATION is text"),
    cli("assess_classification_no_band", assess("--metrics", "{O}/m.json", classification="{C}/nobands.vrt"), 2,
        r"classification raster .*nobands", "CLASSIFICATION has no band"),
    cli("assess_classification_truncated", assess("--metrics", "{O}/m.json", classification="{C}/map_truncated.tif"), 2,
        r"raster .*map_truncated.* cannot be read", "CLASSIFICATION truncated mid-read"),
    cli("assess_classification_complex", assess("--metrics", "{O}/m.json", classification="{C}/complex_map.tif"), 2,
        r"classification raster .*complex_map.*complex", "CLASSIFICATION is complex"),
    cli("assess_classification_not_integer", assess("--metrics", "{O}/m.json", classification="{C}/float_map.tif"), 2,
        r"float_map.*non-integer", "CLASSIFICATION holds 0.5, 1.5, ..."),
    cli("assess_classification_fifo", assess("--metrics", "{O}/m.json", classification="{C}/fifo.tif"), 2,
        r"fifo\.tif.*not a regular file", "CLASSIFICATION is a named pipe", max_seconds=20),
    cli("assess_band_2_of_1", assess("--band", "2", "--metrics", "{O}/m.json"), 2, r"truth\.tif.* band 2 does not exist",
        "BAND 2 of a one-band map"),
    cli("assess_reference_text", assess("--metrics", "{O}/m.json", reference="{C}/text.gpkg"), 2,
        r"reference layer .*text\.gpkg", "REFERENCE is not a vector file"),
    cli("assess_reference_lines", assess("--metrics", "{O}/m.json", reference="{C}/lines.gpkg", field="cls"), 2,
        r"lines\.gpkg.*line feature", "REFERENCE of lines (was accepted)"),
    cli("assess_reference_field_missing", assess("--metrics", "{O}/m.json", field="klass"), 2, r"no field 'klass'",
        "CLASS_FIELD does not exist"),
    cli("assess_reference_field_real", assess("--metrics", "{O}/m.json", reference="{C}/real_field.gpkg", field="cls"), 2,
        r"1\.5.*not a whole number", "class field holding 1.5"),
    cli("assess_reference_far_away", assess("--metrics", "{O}/m.json", reference="{C}/far_away.gpkg", field="cls"), 2,
        r"far_away.*can be used", "every reference feature outside the map"),
    cli("assess_unmatched_name_many_classes", assess("--metrics", "{O}/m.json", classification="{C}/many_classes.tif",
                                                     reference="{C}/unknown_name.gpkg", field="cls"), 2,
        r"'rainforest'.*match no class.*land cover type 11'(?!.*type 12').* and 188 more",
        "an unknown class name against 200 named classes: a dozen listed, not all"),
    cli("assess_continuous_map", assess("--metrics", "{O}/m.json", classification="{C}/continuous.tif"), 2,
        r"continuous\.tif.* 2000 distinct values.*at most 1000", "an int16 map of 2000 values (message said "
        "'at most {MAX_CLASSES}')"),
    cli("assess_confidence_1_5", assess("--confidence", "1.5", "--metrics", "{O}/m.json"), 2,
        r"confidence level .*0\.5 and 1", "--confidence 1.5"),
    cli("assess_ignore_not_codes", assess("--ignore", "water,x", "--metrics", "{O}/m.json"), 2,
        r"Ignore values .*'water'", "--ignore water,x"),
    cli("assess_checkpoint_deep_json", assess("--checkpoint", "{C}/deep_meta.safetensors", "--metrics", "{O}/m.json"), 2,
        CK_NAMED.format("deep_meta") + r".*nested", "CHECKPOINT with deep JSON (read through the guard)"),
    cli("assess_checkpoint_text", assess("--checkpoint", "{C}/text.safetensors", "--metrics", "{O}/m.json"), 2,
        CK_NAMED.format("text"), "CHECKPOINT is a text file"),
    cli("assess_reference_code_255", assess("--metrics", "{O}/m.json", reference="{C}/ref_255.gpkg", field="cls"), 0,
        note="a reference polygon of class 255 is unlabelled, not a class", present=("{O}/m.json",)),
]

# -- stratified sample ---------------------------------------------------------------------------------

SAMPLE = [
    cli("sample_output_is_classification", sample(classification="{C}/truth_raster.gpkg",
                                                  out="/{C}/truth_raster.gpkg"), 2, SAME.format("classification"),
        "OUTPUT = CLASSIFICATION (a GeoPackage raster) through //"),
    cli("sample_output_is_checkpoint", sample("--checkpoint", "{CK}", out="{CK}"), 2, r"(same file as the checkpoint|must be a GeoPackage)",
        "OUTPUT = CHECKPOINT"),
    cli("sample_output_wrong_extension", sample(out="{O}/points.tif"), 2, r"sample output .*points\.tif.*GeoPackage",
        "OUTPUT .tif"),
    cli("sample_output_in_read_only_folder", sample(out="{RO}/p.gpkg"), 2, READ_ONLY,
        "OUTPUT in a read-only folder", needs="readonly"),
    cli("sample_classification_complex", sample(classification="{C}/complex_map.tif"), 2,
        r"classification raster .*complex_map.*complex", "a complex-valued map (was a TypeError traceback)"),
    cli("sample_classification_truncated", sample(classification="{C}/map_truncated.tif"), 2,
        r"raster .*map_truncated.* cannot be read", "truncated mid-read"),
    cli("sample_classification_text", sample(classification="{C}/text.tif"), 2, r"classification raster .*text\.tif",
        "a text file"),
    cli("sample_classification_float", sample(classification="{C}/float_map.tif"), 2, r"float_map.*non-integer",
        "a continuous raster"),
    cli("sample_total_negative", sample("--total", "-5"), 2, r"sample size must not be negative", "--total -5"),
    cli("sample_expected_ua_1_5", sample("--expected-ua", "1.5"), 2, r"expected user's accuracy .*1\.5", "--expected-ua 1.5"),
    cli("sample_target_se_0", sample("--total", "0", "--target-se", "0"), 2, r"target standard error .*positive",
        "--target-se 0"),
    cli("sample_band_0", sample("--band", "0"), 2, r"band", "--band 0"),
    cli("sample_checkpoint_deep_json", sample("--checkpoint", "{C}/deep_header.safetensors"), 2,
        CK_NAMED.format("deep_header") + r".*nested", "CHECKPOINT with deep JSON"),
]

# -- train -------------------------------------------------------------------------------------------

TRAIN = [
    cli("train_output_is_reference", train(out="/{S}/reference_train.gpkg"), 2,
        r"output checkpoint .*" + SAME.format("reference layer"), "OUTPUT = REFERENCE through // (overwrote it)"),
    cli("train_output_is_labels", train("--labels", "{S}/truth.tif", out="{D}/link/truth.tif"), 2,
        SAME.format("label raster"), "OUTPUT = LABELS through a symlinked folder"),
    cli("train_output_is_sar_hard_link", train(out="{D}/hard_sar.tif"), 2, SAME.format("SAR raster"),
        "OUTPUT = a hard link of the SAR raster"),
    cli("train_output_is_init_checkpoint", train("--init-checkpoint", "{CK}", out="{S}/../tiny.safetensors"), 2,
        SAME.format("initial checkpoint"), "OUTPUT = INIT_CHECKPOINT through .."),
    cli("train_log_is_optical", train("--log", "{S}/./optical.tif"), 2, r"training log .*" + SAME.format("optical raster"),
        "OUTPUT_LOG = OPTICAL"),
    cli("train_curve_is_sar", train("--curve", "{D}/link/sar.tif"), 2, r"training curve .*" + SAME.format("SAR raster"),
        "OUTPUT_CURVE = SAR through a symlinked folder"),
    cli("train_curve_is_reference_wal", train("--curve", "{S}/reference_train.gpkg-wal"), 2, SIDE.format("reference layer"),
        "OUTPUT_CURVE = the reference's SQLite write-ahead log"),
    cli("train_state_would_be_reference", train(reference="{C}/ref.safetensors.resume.safetensors",
                                                out="{C}/ref.safetensors"), 2,
        r"resumable training state .*" + SAME.format("reference layer"),
        "the resumable state beside OUTPUT would replace the reference (a layer named like a state)"),
    cli("train_log_is_curve", train("--log", "{O}/t.html", "--curve", "{O}/t.html"), 2, r"are the same file",
        "OUTPUT_LOG = OUTPUT_CURVE"),
    cli("train_output_in_read_only_folder", train(out="{RO}/m.safetensors"), 2, READ_ONLY, "OUTPUT in a read-only folder",
        needs="readonly"),
    cli("train_init_checkpoint_deep_json", train("--init-checkpoint", "{C}/deep_header.safetensors"), 2,
        CK_NAMED.format("deep_header") + r".*nested", "INIT_CHECKPOINT with 100 000-deep JSON (read without the guard)"),
    cli("train_init_checkpoint_text", train("--init-checkpoint", "{C}/text.tif"), 2, CK_NAMED.format(r"text\.tif"),
        "INIT_CHECKPOINT is a text file"),
    cli("train_init_checkpoint_pickle", train("--init-checkpoint", "{C}/pickle.pt"), 2, r"pickle", "INIT_CHECKPOINT is a pickle"),
    cli("train_init_checkpoint_bomb", train("--init-checkpoint", "{C}/channels_bomb.safetensors"), 2,
        r"'channels' must be a whole number from 2 to 1024", "INIT_CHECKPOINT with channels=12000", max_seconds=15),
    cli("train_init_checkpoint_too_large_for_its_weights", train("--init-checkpoint", "{C}/channels_1024.safetensors"), 2,
        r"channels_1024.*larger", "INIT_CHECKPOINT configuration larger than its weights", max_seconds=15),
    cli("train_model_options_depth_bomb", train("--model-options", '{{"depth": 300000}}'), 2,
        r"'depth' must be a whole number from 0 to 48, got 300000",
        "--model-options depth=300000 (ran out of memory after 79 s)", max_seconds=15),
    cli("train_model_options_unknown", train("--model-options", '{{"blocks": 3}}'), 2, r"option\(s\) blocks",
        "--model-options naming an option the network lacks"),
    cli("train_labels_complex", train("--labels", "{C}/complex_map.tif"), 2, r"label raster .*complex_map.*complex",
        "LABELS complex-valued"),
    cli("train_labels_text", train("--labels", "{C}/text.tif"), 2, r"text\.tif", "LABELS is a text file"),
    cli("train_reference_lines", train("--class-field", "cls", reference="{C}/lines.gpkg"), 2,
        r"lines\.gpkg.*line feature", "REFERENCE of lines"),
    cli("train_reference_field_missing", train(reference="{C}/lines.gpkg"), 2, r"lines\.gpkg' has no field 'class_name'",
        "CLASS_FIELD missing from the reference"),
    cli("train_reference_text", train(reference="{C}/text.gpkg"), 2, r"text\.gpkg", "REFERENCE is not a vector file"),
    cli("train_optical_truncated", train(optical="{C}/truncated.tif"), 2, r"truncated\.tif.* cannot be read",
        "OPTICAL truncated mid-read"),
    cli("train_optical_complex", train(optical="{C}/complex_optical.tif"), 2, r"complex_optical.*complex",
        "OPTICAL complex-valued"),
    cli("train_tile_size_33", train("--tile-size", "33"), 2, r"TILE_SIZE 33", "--tile-size 33"),
    cli("train_band_0", train("--optical-bands", "0,1"), 2, r"band 0 does not exist", "OPTICAL_BANDS with a 0"),
]

# -- batch and the sample scene ---------------------------------------------------------------------------

BATCH = [
    cli("batch_checkpoint_deep_json", batch(ck="{C}/deep_header.safetensors"), 2, CK_NAMED.format("deep_header"),
        "CHECKPOINT with deep JSON"),
    cli("batch_scenes_missing", batch(scenes="{D}/no_such_table.csv"), 2, r"no_such_table", "SCENES does not exist"),
    cli("batch_scenes_text", batch(scenes="{C}/text.tif"), 2, r"text\.tif", "SCENES is not a table"),
    cli("batch_map_would_replace_optical", batch(out="{S}", scenes="{D}/scenes_optical.csv"), 2,
        r"map of scene optical.*same file as the optical raster", "a scene named 'optical' written into its own folder"),
    cli("batch_output_dir_is_a_file", batch(out="{CK}"), 2, r"tiny\.safetensors", "OUTPUT_DIR is a file"),
    cli("batch_mosaic_is_optical", batch("--mosaic", "/{S}/optical.tif"), 2, r"mosaic .*" + SAME.format("optical raster"),
        "MOSAIC = a scene's optical raster through // (was found only after every scene)"),
    cli("batch_area_table_is_scenes_table", batch("--area-table", "{D}/link/../scenes.csv"), 2,
        r"class-area table .*" + SAME.format("scenes table"), "AREA_TABLE = SCENES"),
    cli("batch_mosaic_is_area_table", batch("--mosaic", "{O}/areas.tif", "--area-table", "{O}/areas.tif"), 2,
        r"are the same file", "MOSAIC = AREA_TABLE"),
]

SAMPLE_SCENE = [
    cli("samplescene_size_10", ["make-sample-scene", "{O}/scene", "--size", "10"], 2, r"size >= 64", "--size 10"),
    cli("samplescene_folder_is_a_file", ["make-sample-scene", "{CK}", "--size", "64"], 2, r"tiny\.safetensors",
        "the output folder is a file"),
    cli("samplescene_cloud_cover_2", ["make-sample-scene", "{O}/scene", "--cloud-cover", "2"], 2, r"cloud_cover",
        "--cloud-cover 2"),
]

# -- the engine worker (a job as QGIS sends it) --------------------------------------------------------


def job(function, **kwargs):
    return {"function": function, "kwargs": kwargs}


CLASSIFY_KW = dict(optical="{S}/optical.tif", sar="{S}/sar.tif", checkpoint="{CK}", device="cpu", tile_size=64)

WORKER = [
    Case("worker_job_not_json", "worker", "{{not json", 2, r"not valid JSON", "a job that is not JSON"),
    Case("worker_unknown_function", "worker", job("rm_rf", path="/"), 2, r"Unknown function 'rm_rf'",
         "a function the worker does not run"),
    Case("worker_kwargs_not_object", "worker", {"function": "classify", "kwargs": [1, 2]}, 2, r"kwargs must be a JSON object",
         "kwargs is a list"),
    Case("worker_classify_output_is_optical", "worker", job("classify", output="//{S}/optical.tif", **CLASSIFY_KW), 1,
         SAME.format("optical raster"), "classify job, output = optical through //"),
    Case("worker_classify_output_is_checkpoint", "worker", job("classify", output="{S}/../tiny.safetensors",
                                                              **CLASSIFY_KW), 1,
         SAME.format("checkpoint"), "classify job, output = checkpoint"),
    Case("worker_classify_deep_checkpoint", "worker",
         job("classify", output="{O}/map.tif", **{**CLASSIFY_KW, "checkpoint": "{C}/deep_header.safetensors"}), 1,
         CK_NAMED.format("deep_header") + r".*nested", "classify job, 100 000-deep JSON"),
    Case("worker_classify_channels_bomb", "worker",
         job("classify", output="{O}/map.tif", **{**CLASSIFY_KW, "checkpoint": "{C}/channels_bomb.safetensors"}), 1,
         CK_NAMED.format("channels_bomb") + r".*'channels' must be", "classify job, channels=12000", max_seconds=10),
    Case("worker_classify_truncated_optical", "worker",
         job("classify", output="{O}/map.tif", **{**CLASSIFY_KW, "optical": "{C}/truncated.tif"}), 1,
         r"raster .*truncated\.tif.* cannot be read", "classify job, optical truncated mid-read"),
    Case("worker_classify_tile_size_0", "worker", job("classify", output="{O}/map.tif", **{**CLASSIFY_KW, "tile_size": 0}),
         1, r"Tile size 0", "classify job, tile_size 0"),
    Case("worker_classify_band_0", "worker",
         job("classify", output="{O}/map.tif", optical_bands=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], **CLASSIFY_KW), 1,
         r"band 0 does not exist", "classify job, band 0"),
    Case("worker_classify_extent_crs", "worker",
         job("classify", output="{O}/map.tif", extent=[601000, 5296500, 601500, 5297000], extent_crs="EPSG:999999",
             **CLASSIFY_KW), 1, r"extent CRS", "classify job, unknown extent CRS"),
    Case("worker_sample_scene_size_0", "worker", job("sample_scene", out_dir="{O}/scene", size=0), 1, r"size >= 64",
         "sample scene of size 0"),
    Case("worker_batch_deep_checkpoint", "worker",
         job("batch", scenes="{D}/scenes.csv", checkpoint="{C}/deep_meta.safetensors", output_dir="{O}", device="cpu"),
         1, CK_NAMED.format("deep_meta"), "batch job, deep JSON checkpoint"),
]

# -- qgis_process and processing.run ------------------------------------------------------------------------


def alg(algorithm, **params):
    return {"algorithm": algorithm, "params": params}


QC = dict(OPTICAL="{S}/optical.tif", SAR="{S}/sar.tif", CHECKPOINT="{CK}", DEVICE="cpu", TILE_SIZE=64)
QA = dict(CLASSIFICATION="{S}/truth.tif", REFERENCE="{S}/reference.gpkg", CLASS_FIELD="class_code",
          OUTPUT_REPORT="{O}/r.html", OUTPUT_MATRIX="{O}/r.csv", OUTPUT_METRICS="{O}/r.json")
QT = dict(OPTICAL="{S}/optical.tif", SAR="{S}/sar.tif", REFERENCE="{S}/reference_train.gpkg", CLASS_FIELD="class_name",
          MODEL="cloudlulc_net", DEVICE="cpu", OUTPUT_CHECKPOINT="{O}/model.safetensors")
QS = dict(CLASSIFICATION="{S}/truth.tif", TOTAL=30, OUTPUT="{O}/points.gpkg")


def qgis(name, algorithm, params, message, note, status=1, **kw):
    """The same case through qgis_process (status 1) and processing.run (an exception)."""
    return [Case(f"qgis_process_{name}", "qgis_process", alg(algorithm, **params), status, message, note, **kw),
            Case(f"processing_{name}", "processing", alg(algorithm, **params), status, message, note, **kw)]


QGIS = [
    *qgis("classify_tile_size_0", "optsar:classify", {**QC, "TILE_SIZE": 0, "OUTPUT": "{O}/map.tif"},
          r"TILE_SIZE .* from 64 to 4096, got 0", "TILE_SIZE 0: the allowed range, not 'Incorrect parameter value'"),
    *qgis("classify_batch_size_0", "optsar:classify", {**QC, "BATCH_SIZE": 0, "OUTPUT": "{O}/map.tif"},
          r"BATCH_SIZE .* from 1 to 256, got 0", "BATCH_SIZE 0"),
    *qgis("classify_band_0", "optsar:classify", {**QC, "OPTICAL_BANDS": [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],
                                                 "OUTPUT": "{O}/map.tif"},
          r"OPTICAL_BANDS: band 0 does not exist", "OPTICAL_BANDS with a 0 (was 'chosen (0)')"),
    *qgis("classify_deep_json_checkpoint", "optsar:classify", {**QC, "CHECKPOINT": "{C}/deep_header.safetensors",
                                                               "OUTPUT": "{O}/map.tif"},
          r"deep_header.*nested", "a 100 000-deep JSON header in checkParameterValues (aborted qgis_process)"),
    *qgis("classify_deep_json_metadata", "optsar:classify", {**QC, "CHECKPOINT": "{C}/deep_meta.safetensors",
                                                             "OUTPUT": "{O}/map.tif"},
          r"deep_meta.*nested", "100 000-deep JSON metadata"),
    *qgis("classify_checkpoint_no_classes", "optsar:classify", {**QC, "CHECKPOINT": "{C}/no_classes.safetensors",
                                                                "OUTPUT": "{O}/map.tif"},
          r"no_classes.*'classes' is missing", "metadata without classes, refused before the run"),
    *qgis("assess_confidence_1_5", "optsar:assessaccuracy", {**QA, "CONFIDENCE": 1.5},
          r"CONFIDENCE .* from 0\.5 to 0\.999, got 1\.5", "CONFIDENCE 1.5"),
    *qgis("assess_report_is_classification", "optsar:assessaccuracy", {**QA, "OUTPUT_REPORT": "/{S}/truth.tif"},
          SAME.format("classification"), "OUTPUT_REPORT = CLASSIFICATION through //"),
    *qgis("assess_metrics_is_reference", "optsar:assessaccuracy", {**QA, "OUTPUT_METRICS": "{D}/link/reference.gpkg"},
          SAME.format("reference layer"), "OUTPUT_METRICS = REFERENCE through a symlinked folder"),
    *qgis("assess_checkpoint_deep_json", "optsar:assessaccuracy", {**QA, "CHECKPOINT": "{C}/deep_meta.safetensors"},
          r"deep_meta.*nested", "CHECKPOINT with deep JSON"),
    *qgis("sample_output_is_classification", "optsar:stratifiedsample",
          {**QS, "CLASSIFICATION": "{C}/truth_raster.gpkg", "OUTPUT": "//{C}/truth_raster.gpkg"},
          SAME.format("classification"), "OUTPUT = CLASSIFICATION (GeoPackage raster)"),
    *qgis("sample_target_se_2", "optsar:stratifiedsample", {**QS, "TARGET_SE": 2}, r"TARGET_SE .*0\.0001 to 0\.5, got 2",
          "TARGET_SE 2"),
    *qgis("train_batch_size_0", "optsar:train", {**QT, "BATCH_SIZE": -1}, r"BATCH_SIZE .*got -1", "BATCH_SIZE -1"),
    *qgis("train_init_checkpoint_deep_json", "optsar:train", {**QT, "INIT_CHECKPOINT": "{C}/deep_header.safetensors"},
          r"deep_header.*nested", "INIT_CHECKPOINT with deep JSON, refused before the worker starts"),
    *qgis("train_band_0", "optsar:train", {**QT, "SAR_BANDS": [0]}, r"SAR_BANDS: band 0 does not exist", "SAR_BANDS 0"),
    Case("qgis_process_train_output_is_reference", "qgis_process",
         alg("optsar:train", **{**QT, "OUTPUT_CHECKPOINT": "//{S}/reference_train.gpkg"}), 1,
         SAME.format("reference layer"), "OUTPUT_CHECKPOINT = REFERENCE through // (overwrote the GeoPackage)"),
    *qgis("samplescene_size_10", "optsar:samplescene", {"SIZE": 10, "OUTPUT_FOLDER": "{O}/scene"},
          r"SIZE .* from 64 to 4096, got 10", "SIZE 10"),
    *qgis("classifybatch_workers_negative", "optsar:classifybatch",
          {"SCENES": "{D}/scenes.csv", "CHECKPOINT": "{CK}", "WORKERS": -2, "OUTPUT_FOLDER": "{O}/maps"},
          r"WORKERS .* from 0 to 256, got -2", "WORKERS -2"),
    Case("qgis_process_classifybatch_deep_json_checkpoint", "qgis_process",
         alg("optsar:classifybatch", SCENES="{D}/scenes.csv", CHECKPOINT="{C}/deep_meta.safetensors", DEVICE="cpu",
             OUTPUT_FOLDER="{O}/maps"), 1, r"deep_meta.*nested", "a batch with a deep-JSON checkpoint"),
    Case("qgis_process_classify_output_is_checkpoint", "qgis_process", alg("optsar:classify", **QC, OUTPUT="{CK}"), 1,
         SAME.format("checkpoint"), "OUTPUT = CHECKPOINT through the worker (overwrote the model)"),
    Case("qgis_process_classify_optical_symlink_output_real", "qgis_process",
         alg("optsar:classify", **{**QC, "OPTICAL": "{D}/optical_link.tif"}, OUTPUT="{S}/optical.tif"), 1,
         SAME.format("optical raster"), "OPTICAL through a symlink, OUTPUT = the real file (replaced it)"),
]

CLI_CASES = (CLASSIFY_IDENTITY + CLASSIFY_RASTERS + CLASSIFY_CHECKPOINTS + CLASSIFY_OPTIONS + CLASSIFY_VALID_ODD
             + ASSESS + SAMPLE + TRAIN + BATCH + SAMPLE_SCENE)
ENGINE_CASES = CLI_CASES + WORKER
ALL = ENGINE_CASES + QGIS
