"""Plain facts about movies that need no database library (cheap to import)."""

MIN_YEAR = 1888  # the oldest surviving film
MAX_YEAR = 2100
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Mystery",
    "Romance",
    "Science Fiction",
    "Thriller",
    "War",
    "Western",
)
