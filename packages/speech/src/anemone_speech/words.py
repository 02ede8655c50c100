"""The embedded word list `anemone speech synth` draws sentences from: common English words (a data table)."""

WORDS = tuple("""
a about above across after again against air all almost along also always among an and animal another answer
any are area around as ask at away back ball be bear because bed been before began begin behind being below
best better between big bird black blue boat body book both box boy bring brother brown build but buy by call
came can car care carry cat city close cold color come could country cut dark day deep did different do does dog
done door down draw dream drink drive during each early earth east easy eat end enough even evening every eye face
fall family far farm fast father feel few field find fine fire first fish five floor fly follow food foot for
forest four free friend from front full game garden gave get girl give glass go gold good got great green ground
group grow had half hand happy hard has have he head hear heart heavy help her here high hill him his hold home
horse hot hour house how hundred idea if in inside into is island it just keep kind king know lake land large last
late laugh learn leave left less letter life light like line list listen little live long look love low made make
man many map may me mean men might mile milk mind money moon more morning most mother mountain move much music must
my name near need never new next night nine no north not now number of off often old on once one only open or order
other our out over page paper part party people picture piece place plant play please point poor pull put queen
question quick quiet rain read ready red remember rest right river road rock room round run said same saw say school
sea second see seven shall she ship short should show side simple sing sister sit six sleep slow small snow so some
song soon sound south speak spring stand star start stay still stone stop story street strong study summer sun
table take talk tall teacher tell ten than that the their them then there these they thing think this those three
through time to today together told too took tree true try turn two under until up us use very voice wait walk
wall want warm was watch water way we weather week well went were west what when where which while white who why
wind window winter with without woman wood word work world write year yellow yes yet you young your
""".split())
