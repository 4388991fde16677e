// Why a document failed, in words a person who never read the code can act on.
//
// The server's own `last_error` stays visible beside this (it has the details); this adds
// a one-line headline per stable `error_code` and what to do about it.

import { h } from "./dom.js";

const FIX_FILE = "Fix the file and upload it again.";
const ASK_OPERATOR = "An operator must fix Sheaf's configuration; then retry the document.";
const RETRY_LATER = "This is usually temporary: retry the document in a while.";

const HEADLINES = {
  encrypted: ["The PDF is protected by a password, so its text cannot be read.", "Remove the password (print or export it without one) and upload it again."],
  not_a_pdf: ["The file is not a PDF, although it looks like one.", FIX_FILE],
  corrupt_pdf: ["The PDF is damaged and cannot be read.", "Open and save it again in a PDF tool, then upload it again."],
  pdf_too_large: ["The PDF has more pages or bytes than Sheaf accepts.", "Split it into smaller files."],
  pdf_limit_exceeded: ["The PDF expands to far more data than it holds, so Sheaf stopped reading it.", FIX_FILE],
  not_a_docx: ["The file is not a Word (.docx) document, although it looks like one.", FIX_FILE],
  corrupt_docx: ["The Word document is damaged and cannot be read.", "Open and save it again in Word, then upload it again."],
  zip_bomb: ["The Office file expands to far more data than it holds, so Sheaf refused it.", FIX_FILE],
  not_a_pptx: ["The file is not a PowerPoint (.pptx) presentation, or it holds macros.", FIX_FILE],
  corrupt_pptx: ["The presentation is damaged and cannot be read.", "Open and save it again in PowerPoint, then upload it again."],
  not_an_xlsx: ["The file is not an Excel (.xlsx) workbook, or it holds macros.", FIX_FILE],
  corrupt_xlsx: ["The workbook is damaged and cannot be read.", "Open and save it again in Excel, then upload it again."],
  unsafe_xml: ["The Office file contains XML declarations Office never writes (a possible attack).", "Open and save it again in Office, then upload it again."],
  corrupt_html: ["The web page cannot be read.", "Save it again from a browser, then upload it again."],
  corrupt_image: ["The image is damaged or cut off.", "Save or scan it again, then upload it again."],
  image_too_large: ["The image has more pixels than Sheaf reads.", "Scale it down and upload it again."],
  ocr_unavailable: ["The file needs text recognition (OCR), which is not installed on the workers.", ASK_OPERATOR],
  ocr_disabled: ["The file is an image, and text recognition (OCR) is turned off.", ASK_OPERATOR],
  ocr_page_limit: ["Too many pages of the file need text recognition (OCR).", "Split it into smaller files."],
  ocr_failed: ["Text recognition (OCR) could not read a page.", FIX_FILE],
  unsupported_type: ["Sheaf cannot read this kind of file.", "Upload PDF, Word, PowerPoint or Excel (.docx, .pptx, .xlsx), HTML, PNG, JPEG, TIFF, plain text or Markdown files."],
  no_text: ["No text was found in the file (empty, or a scan while OCR is off?).", "Upload a file with text, or ask an operator to turn OCR on."],
  timeout: ["Reading the file took too long, so Sheaf gave up on it.", FIX_FILE],
  memory_limit: ["Reading the file needed more memory than Sheaf allows.", FIX_FILE],
  parser_crash: ["The file made the reader crash.", FIX_FILE],
  embedding_misconfigured: ["The embedding model or deployment Sheaf is set to use does not exist.", ASK_OPERATOR],
  embedding_auth: ["Sheaf was not allowed to use the embedding service.", ASK_OPERATOR],
  embedding_rejected: ["The embedding service refused the document's text.", ASK_OPERATOR],
  embedding_throttled: ["The embedding service was too busy.", RETRY_LATER],
  embedding_unavailable: ["The embedding service could not be reached.", RETRY_LATER],
  embedding_bad_response: ["The embedding service sent an answer Sheaf cannot use.", RETRY_LATER],
  lease_expired: ["The worker processing the document stopped answering, too many times.", RETRY_LATER],
  blob_missing: ["The uploaded file is no longer in storage.", "Upload it again."],
};

/** {headline, advice, detail} for a failed document; generic words for unknown codes. */
export function explain(doc) {
  const [headline, advice] = HEADLINES[doc.error_code] ?? [
    doc.error_kind === "transient"
      ? "Processing failed after every attempt, for a reason that may pass."
      : "Processing failed, and trying again as it is would not help.",
    doc.error_kind === "transient" ? RETRY_LATER : FIX_FILE,
  ];
  return { headline, advice, detail: doc.last_error ?? "" };
}

/** The explanation as a small block: headline, advice, then the server's own words. */
export function failureBlock(doc) {
  const { headline, advice, detail } = explain(doc);
  return h(
    "div",
    { class: "failure" },
    h("p", { class: "failure-headline" }, headline, " ", advice),
    detail ? h("p", { class: "failure-detail" }, "Details: ", detail, doc.error_code ? ` (${doc.error_code})` : "") : null,
  );
}
