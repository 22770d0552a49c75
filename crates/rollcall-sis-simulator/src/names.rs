//! Student and school names: common US names, some with accents, apostrophes, hyphens
//! and suffixes, so exports exercise quoting and encodings.

pub const FIRST: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Mateo", "Isabella", "Lucas",
    "Mia", "Levi", "Amelia", "Ezra", "Harper", "Asher", "Evelyn", "James", "Luna", "Leo",
    "José", "Zoë", "Chloé", "Renée", "Andrés", "Sofía", "Jesús", "Ramón", "Inés", "Joaquín",
    "Aaliyah", "DeShawn", "Jamal", "Keisha", "Malik", "Imani", "Tyrone", "Nia", "Darius", "Aisha",
    "Anh", "Minh", "Huong", "Bao", "Wei", "Mei", "Hiroshi", "Yuki", "Priya", "Arjun",
    "Fatima", "Omar", "Yusuf", "Layla", "Mary Kate", "Anna-Maria", "Jean-Luc", "D'Andre", "Séan", "Björn",
];

pub const LAST: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernández", "López", "González", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Pérez", "Thompson", "White", "Harris", "Sánchez",
    "Clark", "Ramírez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Nguyen", "Tran", "Pham", "Kim", "Patel", "O'Brien", "O'Connor", "McDonald", "Smith-Jones",
    "De la Cruz", "Van Buren", "St. John", "Müller", "Núñez", "Peña", "Ibáñez", "Çelik",
    "Washington", "Jefferson", "Begay", "Yazzie", "Okafor", "Abdullah", "Haddad", "Kowalski",
];

pub const SUFFIX: &[&str] = &["Jr.", "III", "II"];

pub const SCHOOL_STEMS: &[&str] = &[
    "Lincoln", "Washington", "Roosevelt", "Jefferson", "Cesar Chavez", "Sunset", "Oak Grove",
    "Maple", "Riverside", "Hillcrest", "Lakeview", "Pine Ridge", "Mountain View", "Eastside",
    "Westwood", "Northgate", "Valley", "Cedar", "Franklin", "Kennedy",
];
