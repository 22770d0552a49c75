use super::*;
use Category::*;

/// (code, secondary: None = any, Some("") = none given, category, absent_fraction)
type Row = (&'static str, Option<&'static str>, Category, f64);

/// Asserts a preset holds exactly these entries and that each looks up as listed.
fn assert_preset_is(name: &str, table: &[Row]) {
    let map = CodeMap::preset(name).unwrap_or_else(|| panic!("preset {name} must parse"));
    assert_eq!(map.source_system(), name);
    let mut want: Vec<(String, Option<String>, Category, f64)> = table
        .iter()
        .map(|(c, s, cat, f)| (fold::fold_owned(c), s.map(fold::fold_owned), *cat, *f))
        .collect();
    want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let got: Vec<(String, Option<String>, Category, f64)> = map
        .entries()
        .into_iter()
        .map(|e| {
            (
                e.code.to_string(),
                e.secondary_code.map(str::to_string),
                e.mapping.category,
                e.mapping.absent_fraction,
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "preset {name}: entries differ from the documented table"
    );
    let registry = CodeMapRegistry::with_builtins();
    for (code, secondary, category, fraction) in table {
        let secondary = secondary.filter(|s| !s.is_empty());
        let m = registry
            .lookup("d001", name, code, secondary)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            m,
            Mapping {
                category: *category,
                absent_fraction: *fraction
            },
            "{name}: {code:?} × {secondary:?}"
        );
    }
}

const EDFI: &[Row] = &[
    ("In Attendance", None, Present, 0.0),
    ("Present", None, Present, 0.0),
    ("Tardy", None, Tardy, 0.0),
    ("Early departure", None, EarlyDeparture, 0.0),
    ("Excused Absence", None, ExcusedAbsence, 1.0),
    ("Unexcused Absence", None, UnexcusedAbsence, 1.0),
    ("Partial", None, ExcusedAbsence, 0.5),
    ("Suspended", None, OutOfSchoolSuspension, 1.0),
    ("Out of School Suspension", None, OutOfSchoolSuspension, 1.0),
    ("Out-of-School Suspension", None, OutOfSchoolSuspension, 1.0),
    ("Expelled", None, OutOfSchoolSuspension, 1.0),
    ("In School Suspension", None, InSchoolSuspension, 1.0),
    ("In-School Suspension", None, InSchoolSuspension, 1.0),
    ("Student Not Expected", None, NotEnrolled, 0.0),
];

#[test]
fn edfi_preset_maps_every_descriptor_value_and_state_extension() {
    assert_preset_is("edfi", EDFI);
}

#[test]
fn edfi_preset_matches_descriptor_uris_in_any_namespace_and_any_case() {
    let r = CodeMapRegistry::with_builtins();
    for (code, _, category, _) in EDFI {
        for form in [
            format!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#{code}"),
            format!("uri://state.example.gov/AttendanceEventCategoryDescriptor#{code}"),
            code.to_uppercase(),
            format!("  {}  ", code.replace(' ', "   ")),
        ] {
            let m = r.lookup("d9", "edfi", &form, None).unwrap();
            assert_eq!(m.category, *category, "{form:?}");
        }
    }
}

#[test]
fn every_official_edfi_descriptor_in_the_shared_xml_is_mapped() {
    // The descriptor file's CodeValues, Data Standard 5.2 (shared/edfi/descriptors).
    let official = [
        "Early departure",
        "Excused Absence",
        "In Attendance",
        "Partial",
        "Present",
        "Tardy",
        "Unexcused Absence",
    ];
    let map = CodeMap::preset("edfi").unwrap();
    for v in official {
        assert!(map.get(v, None).is_some(), "{v} unmapped");
    }
}

#[test]
fn powerschool_preset_maps_codes_only_with_their_presence_status() {
    assert_preset_is(
        "powerschool",
        &[
            ("P", Some("Present"), Present, 0.0),
            ("FT", Some("Present"), Present, 0.0),
            ("SA", Some("Present"), Present, 0.0),
            ("T", Some("Present"), Tardy, 0.0),
            ("TE", Some("Present"), Tardy, 0.0),
            ("TU", Some("Present"), Tardy, 0.0),
            ("L", Some("Present"), EarlyDeparture, 0.0),
            ("LE", Some("Present"), EarlyDeparture, 0.0),
            ("A", Some("Absent"), UnexcusedAbsence, 1.0),
            ("U", Some("Absent"), UnexcusedAbsence, 1.0),
            ("UA", Some("Absent"), UnexcusedAbsence, 1.0),
            ("E", Some("Absent"), ExcusedAbsence, 1.0),
            ("EA", Some("Absent"), ExcusedAbsence, 1.0),
            ("AE", Some("Absent"), ExcusedAbsence, 1.0),
            ("M", Some("Absent"), ExcusedAbsence, 1.0),
            ("HD", Some("Absent"), UnexcusedAbsence, 0.5),
            ("HA", Some("Absent"), UnexcusedAbsence, 0.5),
            ("HE", Some("Absent"), ExcusedAbsence, 0.5),
            ("S", Some("Absent"), OutOfSchoolSuspension, 1.0),
            ("OSS", Some("Absent"), OutOfSchoolSuspension, 1.0),
            ("ISS", Some("Present"), InSchoolSuspension, 1.0),
            ("ISS", Some("Absent"), InSchoolSuspension, 1.0),
        ],
    );
    let r = CodeMapRegistry::with_builtins();
    assert!(r.lookup("d1", "powerschool", "T", Some("Absent")).is_err());
    assert!(r.lookup("d1", "powerschool", "A", None).is_err());
    assert!(r.lookup("d1", "powerschool", "a", Some("ABSENT")).is_ok());
}

#[test]
fn infinite_campus_preset_maps_status_by_excuse_in_words_or_letters_and_never_unknown() {
    let mut rows: Vec<Row> = Vec::new();
    let excuses: [(&'static str, &'static str); 3] =
        [("Excused", "E"), ("Unexcused", "U"), ("Exempt", "X")];
    for status in ["Present", "P"] {
        rows.push((status, Some(""), Present, 0.0));
    }
    for status in ["Absent", "A"] {
        for (word, letter) in excuses {
            let (cat, f) = match word {
                "Excused" => (ExcusedAbsence, 1.0),
                "Unexcused" => (UnexcusedAbsence, 1.0),
                _ => (Present, 0.0),
            };
            rows.push((status, Some(word), cat, f));
            rows.push((status, Some(letter), cat, f));
        }
    }
    for (statuses, cat) in [
        (["Tardy", "T"], Tardy),
        (["Early Release", "E"], EarlyDeparture),
    ] {
        for status in statuses {
            rows.push((status, Some(""), cat, 0.0));
            for (word, letter) in excuses {
                rows.push((status, Some(word), cat, 0.0));
                rows.push((status, Some(letter), cat, 0.0));
            }
        }
    }
    assert_preset_is("infinite_campus", &rows);
    let r = CodeMapRegistry::with_builtins();
    for status in [
        "Absent",
        "Tardy",
        "Early Release",
        "Present",
        "A",
        "T",
        "E",
        "P",
    ] {
        let err = r
            .lookup("d7", "infinite_campus", status, Some("Unknown"))
            .unwrap_err();
        assert!(matches!(err, LookupError::UnknownCode { .. }), "{status}");
    }
    assert!(r.lookup("d7", "infinite_campus", "Absent", None).is_err());
    assert!(r.lookup("d7", "infinite_campus", "A", None).is_err());
    assert!(
        r.lookup("d7", "infinite_campus", "P", Some("X")).is_err(),
        "present-exempt is district-defined"
    );
}

#[test]
fn skyward_preset_maps_attendance_type_categories_and_splits_absences_by_is_truant() {
    let mut rows: Vec<Row> = vec![
        ("Present", None, Present, 0.0),
        ("Tardy", None, Tardy, 0.0),
        ("Left Early", None, EarlyDeparture, 0.0),
        ("LeftEarly", None, EarlyDeparture, 0.0),
        ("Early Dismissal", None, EarlyDeparture, 0.0),
        ("EarlyDismissal", None, EarlyDeparture, 0.0),
        ("Excused", None, ExcusedAbsence, 1.0),
        ("Unexcused", None, UnexcusedAbsence, 1.0),
        ("Out of School Suspension", None, OutOfSchoolSuspension, 1.0),
        ("OutOfSchoolSuspension", None, OutOfSchoolSuspension, 1.0),
        ("Suspension", None, OutOfSchoolSuspension, 1.0),
        ("In School Suspension", None, InSchoolSuspension, 1.0),
        ("InSchoolSuspension", None, InSchoolSuspension, 1.0),
        ("Not Enrolled", None, NotEnrolled, 0.0),
        ("NotEnrolled", None, NotEnrolled, 0.0),
    ];
    for (code, f) in [
        ("Absent", 1.0),
        ("Half Day Absent", 0.5),
        ("HalfDayAbsent", 0.5),
    ] {
        for (truant, cat) in [("true", UnexcusedAbsence), ("Y", UnexcusedAbsence)] {
            rows.push((code, Some(truant), cat, f));
        }
        for (truant, cat) in [("false", ExcusedAbsence), ("N", ExcusedAbsence)] {
            rows.push((code, Some(truant), cat, f));
        }
    }
    assert_preset_is("skyward", &rows);
    let r = CodeMapRegistry::with_builtins();
    assert!(r.lookup("d1", "skyward", "Absent", None).is_err());
    assert!(r.lookup("d1", "skyward", "Absent", Some("TRUE")).is_ok());
    assert_eq!(
        r.lookup("d1", "skyward", "Excused", Some("Y"))
            .unwrap()
            .category,
        ExcusedAbsence,
        "the category says the excuse"
    );
}

#[test]
fn generic_preset_maps_the_canonical_names_and_ceds_values() {
    let mut rows: Vec<Row> = Vec::new();
    for &c in Category::ALL {
        let name: &'static str = c.as_str();
        rows.push((name, None, c, c.default_absent_fraction()));
        if name.contains('_') {
            let spaced: &'static str = Box::leak(name.replace('_', " ").into_boxed_str());
            rows.push((spaced, None, c, c.default_absent_fraction()));
        }
    }
    assert_preset_is("generic", &rows);
    let r = CodeMapRegistry::with_builtins();
    for ceds in [
        "Present",
        "Excused Absence",
        "Unexcused Absence",
        "Tardy",
        "Early Departure",
    ] {
        assert!(r.lookup("d1", "generic", ceds, None).is_ok(), "{ceds}");
    }
}

#[test]
fn every_preset_is_listed_and_loaded_by_with_builtins() {
    let r = CodeMapRegistry::with_builtins();
    for (name, _) in PRESETS {
        let m = r.get("any", name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(m.district_id(), None);
        assert!(m.origin().contains(name));
        assert!(m.description().is_some());
    }
}

// --- lookups that must not guess ----------------------------------------------------------

#[test]
fn unknown_code_error_names_district_source_code_and_secondary() {
    let r = CodeMapRegistry::with_builtins();
    let err = r
        .lookup("d001", "powerschool", "XZ", Some("Absent"))
        .unwrap_err();
    assert_eq!(
        err,
        LookupError::UnknownCode {
            district_id: "d001".into(),
            source_system: "powerschool".into(),
            code: "XZ".into(),
            secondary_code: Some("Absent".into()),
            origin: "preset powerschool".into(),
        }
    );
    let text = err.to_string();
    for part in [
        "\"XZ\"",
        "\"Absent\"",
        "\"powerschool\"",
        "\"d001\"",
        "add it",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
}

#[test]
fn a_source_system_without_map_or_preset_is_no_code_map() {
    let r = CodeMapRegistry::with_builtins();
    let err = r.lookup("d001", "csv", "A", None).unwrap_err();
    assert!(matches!(err, LookupError::NoCodeMap { .. }));
    assert!(err.to_string().contains("edfi, powerschool"), "{err}");
    let empty = CodeMapRegistry::empty();
    assert!(matches!(
        empty.lookup("d001", "edfi", "Tardy", None),
        Err(LookupError::NoCodeMap { .. })
    ));
}

// --- district maps ------------------------------------------------------------------------

const D001: &str = r#"
district_id = "d001"
source_system = "csv"
extends = "powerschool"

[codes]
"A"  = "unexcused_absence"
"HD" = { category = "excused_absence", absent_fraction = 0.5 }

[secondary_codes.T]
Absent = "unexcused_absence"
"" = "tardy"
"#;

#[test]
fn district_map_overrides_and_extends_its_preset() {
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(CodeMap::from_toml_str(D001, "d001.toml").unwrap())
        .unwrap();
    let get = |c: &str, s: Option<&str>| r.lookup("d001", "csv", c, s).map(|m| m.category);
    assert_eq!(get("A", None), Ok(UnexcusedAbsence), "own wildcard entry");
    assert_eq!(
        get("HD", Some("Absent")),
        Ok(ExcusedAbsence),
        "the district's entries for a code replace the preset's"
    );
    assert_eq!(get("HD", None), Ok(ExcusedAbsence));
    assert_eq!(
        r.lookup("d001", "csv", "HD", None).unwrap().absent_fraction,
        0.5
    );
    assert_eq!(
        get("T", Some("Absent")),
        Ok(UnexcusedAbsence),
        "district redefines T"
    );
    assert!(
        get("T", Some("Present")).is_err(),
        "replaced with the district's T"
    );
    assert_eq!(get("T", None), Ok(Tardy));
    assert_eq!(
        get("E", Some("Absent")),
        Ok(ExcusedAbsence),
        "inherited from preset"
    );
    assert!(get("Q", None).is_err());
    // District ids match ignoring ASCII case; other districts fall back to the preset.
    assert_eq!(
        r.lookup("D001", "csv", "A", None).map(|m| m.category),
        Ok(UnexcusedAbsence)
    );
    assert!(matches!(
        r.lookup("d002", "csv", "A", None),
        Err(LookupError::NoCodeMap { .. })
    ));
    assert_eq!(r.district_maps(), vec![("d001", "csv")]);
}

#[test]
fn specific_secondary_entry_wins_over_the_code_wide_entry() {
    let map = CodeMap::from_toml_str(
        r#"
        district_id = "d1"
        source_system = "sis"
        [codes]
        X = "excused_absence"
        [secondary_codes.X]
        Unexcused = "unexcused_absence"
        "#,
        "m.toml",
    )
    .unwrap();
    assert_eq!(
        map.get("x", Some(" unexcused ")).unwrap().category,
        UnexcusedAbsence
    );
    assert_eq!(
        map.get("X", Some("Other")).unwrap().category,
        ExcusedAbsence
    );
    assert_eq!(map.get("X", None).unwrap().category, ExcusedAbsence);
}

#[test]
fn district_map_can_map_a_full_descriptor_uri_before_the_stripped_value() {
    let map = CodeMap::from_toml_str(
        r#"
        district_id = "d1"
        source_system = "edfi"
        extends = "edfi"
        [codes]
        "uri://tx.gov/AttendanceEventCategoryDescriptor#Partial" = { category = "unexcused_absence", absent_fraction = 0.25 }
        "#,
        "tx.toml",
    )
    .unwrap();
    assert!(
        map.strips_descriptor_namespace(),
        "inherited from the preset"
    );
    assert_eq!(map.extends(), Some("edfi"));
    let tx = map
        .get(
            "uri://tx.gov/AttendanceEventCategoryDescriptor#Partial",
            None,
        )
        .unwrap();
    assert_eq!((tx.category, tx.absent_fraction), (UnexcusedAbsence, 0.25));
    let edfi = map
        .get(
            "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Partial",
            None,
        )
        .unwrap();
    assert_eq!((edfi.category, edfi.absent_fraction), (ExcusedAbsence, 0.5));
}

#[test]
fn a_second_map_for_the_same_district_and_source_is_refused() {
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(CodeMap::from_toml_str(D001, "a.toml").unwrap())
        .unwrap();
    let err = r
        .insert(CodeMap::from_toml_str(D001, "b.toml").unwrap())
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("b.toml") && text.contains("a.toml"), "{text}");
}

#[test]
fn load_dir_reads_every_toml_file_and_load_file_names_the_file_on_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d001.toml"), D001).unwrap();
    std::fs::write(
        dir.path().join("d002.toml"),
        "district_id = \"d002\"\nsource_system = \"edfi\"\nextends = \"edfi\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a map").unwrap();
    let mut r = CodeMapRegistry::with_builtins();
    assert_eq!(r.load_dir(dir.path()).unwrap(), 2);
    assert_eq!(r.district_maps(), vec![("d001", "csv"), ("d002", "edfi")]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "district_id = \"d3\"\nsource_system = \"x\"\n[codes]\nA = \"absent\"\n",
    )
    .unwrap();
    let err = CodeMapRegistry::with_builtins()
        .load_file(&bad)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("bad.toml") && text.contains("codes.A"),
        "{text}"
    );
    assert!(
        text.contains("unexcused_absence"),
        "lists valid categories: {text}"
    );

    let missing = CodeMapRegistry::with_builtins()
        .load_file(dir.path().join("nope.toml"))
        .unwrap_err();
    assert!(matches!(missing, CodeMapError::Read { .. }));
    assert!(missing.to_string().contains("nope.toml"));
}

#[test]
fn invalid_maps_are_refused_with_file_key_and_problem() {
    let cases: &[(&str, &str)] = &[
        ("source_system = \"x\"\n[codes]\nA = \"present\"", "district_id"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = \"present\"\nbogus = 1\n[other]", "other"),
        ("district_id = \"d\"\nsource_system = \"x\"\nextends = \"aeries\"", "extends"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = \"present\"\na = \"tardy\"", "codes.a"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = { category = \"excused_absence\", absent_fraction = 1.5 }", "absent_fraction must be in [0, 1]"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = { category = \"excused_absence\", fraction = 0.5 }", "unknown key \"fraction\""),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = { absent_fraction = 0.5 }", "`category` is missing"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = 3", "got integer"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\nA = { category = \"tardy\", absent_fraction = 0.5 }", "must be 0 for tardy"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[secondary_codes.A]\nX = \"present\"\nx = \"tardy\"", "secondary_codes.A.x"),
        ("district_id = \"d\"\nsource_system = \"x\"", "maps no code"),
        ("district_id = \" \"\nsource_system = \"x\"\n[codes]\nA = \"present\"", "district_id"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes]\n\" \" = \"present\"", "must not be empty"),
        ("district_id = \"d\"\nsource_system = \"x\"\n[codes\n", "expected"),
    ];
    for (text, needle) in cases {
        let err = CodeMap::from_toml_str(text, "dist.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("code map dist.toml: "), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}

// --- grade levels and exit/withdraw types --------------------------------------------

#[test]
fn the_common_table_parses_and_maps_only_to_canonical_values() {
    let common = values::parse_common(values::COMMON_TOML).expect("presets/common.toml parses");
    assert!(common.grades.len() >= 30, "{}", common.grades.len());
    let (grades, exits) = builtin_value_entries();
    assert_eq!(grades.len(), common.grades.len());
    assert!(
        exits.is_empty(),
        "exit codes are district-defined: {exits:?}"
    );
    for (_, g) in grades {
        assert!(rollcall_model::GRADE_LEVELS.contains(&g), "{g}");
    }
}

#[test]
fn every_preset_spelling_maps_to_its_canonical_grade() {
    let r = CodeMapRegistry::with_builtins();
    for (source, value, want) in [
        // Ed-Fi: code values and descriptor URIs in any namespace.
        ("edfi", "Ninth grade", "Ninth grade"),
        (
            "edfi",
            "uri://ed-fi.org/GradeLevelDescriptor#Kindergarten",
            "Kindergarten",
        ),
        (
            "edfi",
            "uri://tx.gov/GradeLevelDescriptor#Prekindergarten",
            "Prekindergarten",
        ),
        (
            "edfi",
            "uri://ed-fi.org/GradeLevelDescriptor#Preschool/Prekindergarten",
            "Preschool/Prekindergarten",
        ),
        ("edfi", "  first   GRADE ", "First grade"),
        // PowerSchool Grade_Level: 0 = K, 1..12.
        ("powerschool", "0", "Kindergarten"),
        ("powerschool", "3", "Third grade"),
        ("powerschool", "12", "Twelfth grade"),
        // Infinite Campus / Skyward: KG, 01..12, PK, TK.
        ("infinite_campus", "KG", "Kindergarten"),
        ("infinite_campus", "01", "First grade"),
        ("infinite_campus", "PK", "Prekindergarten"),
        ("skyward", "kg", "Kindergarten"),
        ("skyward", "09", "Ninth grade"),
        ("skyward", "TK", "Transitional Kindergarten"),
        ("skyward", "UG", "Ungraded"),
        // Generic: K, 1..12; Aeries (no preset, no map): 0..12 by the built-in table.
        ("generic", "K", "Kindergarten"),
        ("generic", "11", "Eleventh grade"),
        ("aeries", "0", "Kindergarten"),
        ("aeries", "5", "Fifth grade"),
    ] {
        assert_eq!(
            r.grade_level("d1", source, value),
            Ok(want),
            "{source} {value:?}"
        );
    }
}

#[test]
fn an_unknown_grade_is_never_guessed() {
    let r = CodeMapRegistry::with_builtins();
    for (source, value) in [
        ("powerschool", "-1"),
        ("powerschool", "-2"),
        ("skyward", "PS"),
        (
            "edfi",
            "uri://ed-fi.org/GradeLevelDescriptor#Grade Fourteen",
        ),
        ("aeries", "99"),
    ] {
        let err = r.grade_level("d1", source, value).unwrap_err();
        assert!(
            matches!(err, LookupError::UnknownGradeLevel { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("{value:?}")), "{err}");
        assert!(err.to_string().contains("[grade_levels]"), "{err}");
    }
}

#[test]
fn a_district_map_extends_and_overrides_the_grade_table() {
    let map = CodeMap::from_toml_str(
        r#"
        district_id = "Ridge"
        source_system = "powerschool"
        extends = "powerschool"
        [grade_levels]
        "-1" = "prekindergarten"
        "-2" = "Preschool"
        "K" = "Transitional Kindergarten"
        [exit_withdraw_types]
        "NS" = "No show"
        "W1" = "Withdrawn"
        "IE" = "invalid enrollment"
        "#,
        "ridge.toml",
    )
    .unwrap();
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(map).unwrap();
    assert_eq!(
        r.grade_level("ridge", "powerschool", "-1"),
        Ok("Prekindergarten")
    );
    assert_eq!(r.grade_level("RIDGE", "powerschool", "-2"), Ok("Preschool"));
    assert_eq!(
        r.grade_level("ridge", "powerschool", "k"),
        Ok("Transitional Kindergarten"),
        "the district's entry comes before the built-in table"
    );
    assert_eq!(
        r.grade_level("ridge", "powerschool", "0"),
        Ok("Kindergarten")
    );
    assert_eq!(
        r.exit_withdraw_type("ridge", "powerschool", "ns"),
        Ok("No show")
    );
    assert_eq!(
        r.exit_withdraw_type("ridge", "powerschool", "IE"),
        Ok("Invalid enrollment")
    );
    // Another district keeps the built-ins.
    assert!(r.grade_level("other", "powerschool", "-1").is_err());
    assert!(matches!(
        r.exit_withdraw_type("other", "powerschool", "NS"),
        Err(LookupError::UnknownExitType { .. })
    ));
    // Attendance codes still come from the preset.
    assert!(r
        .lookup("ridge", "powerschool", "A", Some("Absent"))
        .is_ok());
}

#[test]
fn exit_types_match_the_ed_fi_code_values_bare_or_as_uris() {
    let r = CodeMapRegistry::with_builtins();
    for (value, want) in [
        ("No show", "No show"),
        (
            "uri://ed-fi.org/ExitWithdrawTypeDescriptor#Invalid enrollment",
            "Invalid enrollment",
        ),
        (
            "uri://ed-fi.org/ExitWithdrawTypeDescriptor#Transferred",
            "Transferred",
        ),
        ("graduated", "Graduated"),
    ] {
        assert_eq!(r.exit_withdraw_type("d1", "edfi", value), Ok(want));
        assert_eq!(
            r.exit_withdraw_type("d1", "aeries", value),
            Ok(want),
            "no map"
        );
    }
}

#[test]
fn grade_and_exit_sections_are_validated() {
    for (body, key, problem) in [
        (
            r#"[grade_levels]
            "K" = "Kinder""#,
            "grade_levels.K",
            "not an Ed-Fi GradeLevelDescriptor code value",
        ),
        (
            r#"[grade_levels]
            "K" = 5"#,
            "grade_levels.K",
            "must be a string",
        ),
        (
            r#"[grade_levels]
            "KG" = "Kindergarten"
            "kg" = "Kindergarten""#,
            "grade_levels.kg",
            "same value as",
        ),
        (
            r#"[exit_withdraw_types]
            "NS" = "No-show""#,
            "exit_withdraw_types.NS",
            "ExitWithdrawTypeDescriptor",
        ),
    ] {
        let text = format!("district_id = \"d\"\nsource_system = \"powerschool\"\n{body}");
        let err = CodeMap::from_toml_str(&text, "d.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(problem), "{err}");
    }
    // A map of grades only is a valid map.
    let m = CodeMap::from_toml_str(
        "district_id = \"d\"\nsource_system = \"aeries\"\n[grade_levels]\n\"-1\" = \"Transitional Kindergarten\"\n",
        "d.toml",
    )
    .unwrap();
    assert_eq!(m.grade_entries(), vec![("-1", "Transitional Kindergarten")]);
}

#[test]
fn expelled_and_partial_are_explicit_preset_entries_a_district_can_override() {
    let r = CodeMapRegistry::with_builtins();
    let m = |r: &CodeMapRegistry, d: &str, c: &str| r.lookup(d, "edfi", c, None).unwrap();
    assert_eq!(
        m(
            &r,
            "d1",
            "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Partial"
        ),
        Mapping {
            category: ExcusedAbsence,
            absent_fraction: 0.5
        }
    );
    assert_eq!(
        m(
            &r,
            "d1",
            "uri://tx.gov/AttendanceEventCategoryDescriptor#Expelled"
        ),
        Mapping {
            category: OutOfSchoolSuspension,
            absent_fraction: 1.0
        }
    );
    // The preset says why, next to each entry.
    let edfi = PRESETS.iter().find(|p| p.0 == "edfi").unwrap().1;
    for code in ["\"Partial\" =", "\"Expelled\" ="] {
        let at = edfi.find(code).unwrap();
        assert!(
            edfi[..at].trim_end().ends_with("in its code map."),
            "{code} lacks its reason"
        );
    }
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(
        CodeMap::from_toml_str(
            r#"
            district_id = "d2"
            source_system = "edfi"
            extends = "edfi"
            [codes]
            "Expelled" = "not_enrolled"
            "Partial" = { category = "unexcused_absence", absent_fraction = 0.5 }
            "#,
            "d2.toml",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m(&r, "d2", "Expelled").category, NotEnrolled);
    assert_eq!(m(&r, "d2", "Partial").category, UnexcusedAbsence);
    assert_eq!(m(&r, "d1", "Expelled").category, OutOfSchoolSuspension);
}
