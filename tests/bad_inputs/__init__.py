"""The bad-input corpus: one small generator per case of `shared/bad-inputs.md`.

Every input is built in memory by the tests (nothing binary is checked in), and
`tests/integration/test_bad_inputs.py` asserts the outcome of each:

    pdf.py      #1-#13   hand-assembled PDFs, each valid but for its one flaw
    docx.py     #14-#18  real DOCX packages with one part replaced or added
    upload.py   #19-#24  raw multipart bodies, hostile filenames, lying types, encodings
    hostile.py  --       `HostileExtractor`, the test hook that makes the extraction child
                         segfault, abort, loop or exhaust memory on demand (#8's crash:
                         no current pypdf input crashes the interpreter any more)

#26 (a message for a deleted document) needs no input: the test deletes a document
before and during processing. Not generated here, and why:

    #25      poison queue messages: Service Bus settlement is not built yet (issue 6
             says "when the Service Bus path exists"); nothing consumes a message body.
    #27-#30  runtime faults, not inputs: lease renewal is tested in
             tests/unit/test_processing.py, SIGKILL mid-document in tests/e2e/test_kill.py
             and tests/e2e/test_chaos.py, database connection loss in the chaos run.
"""
